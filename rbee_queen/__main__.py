"""`rbee-queen`: run the orchestrator daemon."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import uvicorn

from rbee_queen.app import create_app
from rbee_queen.bind import check_bind
from rbee_queen.config import QueenConfig
from rbee_queen.errors import RbeeError
from rbee_queen.requestcontext import CorrelationFilter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rbee-queen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8080)
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
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # the request's id on every line
        handler.addFilter(CorrelationFilter())
    config = QueenConfig.from_env(
        host=args.host,
        port=args.port,
        stop_workers_on_exit=not args.keep_workers,
        token_file=args.token_file,
    )
    try:
        check_bind(config)
    except RbeeError as exc:
        logging.getLogger("rbee.queen").error("%s", exc.message)
        raise SystemExit(f"rbee-queen: error: [{exc.code}] {exc.message}") from None
    pid_file = write_pid_file(config)
    try:
        uvicorn.run(
            create_app(config),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=5,
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
