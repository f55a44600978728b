"""`rbee-keeper`: the root parser, and the edge where errors become exit codes.

Exit codes: 0 success, 1 failure (one `error: [CODE] message` line on stderr),
2 usage error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import argcomplete
import httpx

from rbee_keeper.commands import (
    audit,
    completion,
    dashboard,
    doctor,
    infer,
    keys,
    logs,
    models,
    nodes,
    setup,
    workers,
)
from rbee_keeper.keeper_config import DEFAULT_QUEEN_URL, QUEEN_URL_ENV, load_keeper_settings
from rbee_keeper.output import note
from rbee_keeper.token import TOKEN_FILE_ENV
from rbee_queen.errors import RbeeError
from rbee_wire.error_text import shown


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_keeper_settings()
    except RbeeError as error:
        note(f"error: [{error.code}] {' '.join(error.message.split())}")
        return 1
    parser = build_parser()
    # Under a shell's completion hook this prints the candidates and exits.
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    token_file = getattr(args, "token_file", None) or settings.token_file
    if token_file:
        # One place the token is looked up (rbee_keeper/token.py) reads this.
        os.environ[TOKEN_FILE_ENV] = str(token_file)
    try:
        return int(args.handler(args))
    except RbeeError as error:
        note(f"error: [{error.code}] {' '.join(error.message.split())}")
        return 1
    except KeyboardInterrupt:
        note("interrupted")
        return 130
    except BrokenPipeError:
        # Whoever read stdout went away (`| head`); stop quietly, and keep Python's
        # final flush at exit from failing on the same closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbee-keeper",
        description="Run LLM inference on your own GPU nodes through the rbee queen.",
        parents=[global_options(with_defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {rbee_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = global_options(with_defaults=False)
    for group in (setup, nodes, infer, workers, models, logs, dashboard, keys, audit):
        group.register(commands, common)
    doctor.register(commands, common)
    completion.register(commands, common)
    return parser


def rbee_version() -> str:
    try:
        return version("rbee")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def global_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """`--queen-url` and `--json`, accepted before or after the command.

    Only the root parser has defaults: a subcommand's default would overwrite a
    value given before the subcommand, so there the options default to absent.
    """
    settings = load_keeper_settings()  # keeper.toml under the environment
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options")
    group.add_argument(
        "--queen-url",
        type=queen_url,
        metavar="URL",
        default=settings.queen_url if with_defaults else argparse.SUPPRESS,
        help=f"the queen's address (default: ${QUEEN_URL_ENV}, else keeper.toml's "
        f"queen_url, else {DEFAULT_QUEEN_URL})",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=settings.output == "json" if with_defaults else argparse.SUPPRESS,
        help="print JSON instead of text (infer: one event a line; default: $RBEE_OUTPUT, "
        "else keeper.toml's output)",
    )
    group.add_argument(
        "--text",
        dest="json",
        action="store_false",
        default=argparse.SUPPRESS,
        help="print text even where $RBEE_OUTPUT or keeper.toml asks for JSON",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        default=None if with_defaults else argparse.SUPPRESS,
        help=f"the queen's API token, mode 0600 (default: ${TOKEN_FILE_ENV}, "
        "$RBEE_API_TOKEN, else $RBEE_HOME/api-token)",
    )
    return options


def queen_url(text: str) -> str:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {shown(text)}")
    return text
