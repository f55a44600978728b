"""`rbee-queen`: run the orchestrator daemon."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from rbee_queen.api.http_limits import HttpLimits, protocol_class
from rbee_queen.app import create_app
from rbee_queen.bind import check_bind
from rbee_queen.config import QueenConfig, effective
from rbee_queen.config_load import ConfigInvalid
from rbee_queen.errors import RbeeError
from rbee_queen.requestcontext import CorrelationFilter

# Exit status of a configuration that fails validation (argparse's, for bad usage).
EXIT_CONFIG = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rbee-queen", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the settings file (default: $RBEE_CONFIG, else $RBEE_HOME/queen.toml)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the settings, print each with its source, exit 0 (valid) or 2",
    )
    parser.add_argument("--host", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int)
    parser.add_argument(
        "--keep-workers",
        action="store_true",
        help="leave workers running when the queen stops (default: stop them all)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="the API token (mode 0600), instead of $CREDENTIALS_DIRECTORY/rbee-api-token, "
        "$RBEE_API_TOKEN_FILE, $RBEE_API_TOKEN or $RBEE_HOME/api-token",
    )
    parser.add_argument("--log-level")
    parser.add_argument(
        "--database",
        metavar="PATH|URL",
        help="the SQLite file, or postgresql://user@host:port/dbname (no password in it:"
        " database.password_file or PGPASSFILE)",
    )
    return parser.parse_args(argv)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, by their path in queen.toml."""
    return {
        "server.host": args.host,
        "server.port": args.port,
        "server.log_level": args.log_level,
        "server.stop_workers_on_exit": False if args.keep_workers else None,
        "paths.token_file": args.token_file,
        "paths.database": args.database,
    }


def load_or_exit(args: argparse.Namespace) -> QueenConfig:
    """The checked settings; every problem on stderr and exit 2 before anything
    is started or written."""
    try:
        return QueenConfig.load(config_file=args.config, flags=flag_values(args))
    except ConfigInvalid as exc:
        print(
            f"rbee-queen: error: [CONFIG_INVALID] {len(exc.problems)} problem(s):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def print_config(config: QueenConfig) -> None:
    origin = config.origin
    print(f"# file: {origin.file if origin else '-'}")
    for row in effective(config):
        value = json.dumps(row["value"])
        reload = "reloadable" if row["reloadable"] else "restart"
        print(f"{row['key']} = {value}  # {row['source']}, {reload}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = load_or_exit(args)
    if args.check_config:
        print_config(config)
        return
    os.umask(0o077)  # the database, logs and tokens it writes are the owner's alone
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # the request's id on every line
        handler.addFilter(CorrelationFilter())
    try:
        check_bind(config)
    except RbeeError as exc:
        logging.getLogger("rbee.queen").error("%s", exc.message)
        raise SystemExit(f"rbee-queen: error: [{exc.code}] {exc.message}") from None
    pid_file = write_pid_file(config)
    try:
        uvicorn.run(
            create_app(config),
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            timeout_graceful_shutdown=5,
            http=protocol_class(HttpLimits.of(config)),
        )
    finally:
        pid_file.unlink(missing_ok=True)


def write_pid_file(config: QueenConfig) -> Path:
    """RBEE_HOME/queen.pid: lets `kill $(jq .pid ...)` and tests find this queen."""
    config.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config.home / "queen.pid"
    path.write_text(json.dumps({"pid": os.getpid(), "host": config.host, "port": config.port}))
    return path


if __name__ == "__main__":
    main()
