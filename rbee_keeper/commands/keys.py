"""`rbee-keeper keys ...`: named API keys, each with an admin right and a model list.

A new key's token goes to a file (mode 0600) and nowhere else: not to the
terminal, not to `--json` output, so it never lands in a scrollback or a log.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import cell, note, print_json, print_table
from rbee_queen.errors import InvalidRequest
from rbee_queen.secrets import write_secret_file
from rbee_wire.error_text import shown


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser("keys", help="add, list and revoke API keys (admin)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", parents=[common], help="create a named key")
    add.add_argument("--name", required=True, help="the key's name (A-Z a-z 0-9 _ -)")
    add.add_argument(
        "--token-out",
        required=True,
        type=Path,
        metavar="PATH",
        help="new file (mode 0600) to write the token to; it is shown nowhere else",
    )
    add.add_argument("--admin", action="store_true", help="may manage nodes, workers and keys")
    add.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="REF",
        help="a model this key may use (repeat; default: every model)",
    )
    add.set_defaults(handler=add_key)

    listing = actions.add_parser("list", parents=[common], help="show the named keys")
    listing.set_defaults(handler=list_keys)

    revoke = actions.add_parser("revoke", parents=[common], help="revoke a named key now")
    revoke.add_argument("--name", required=True, help="the key's name")
    revoke.set_defaults(handler=revoke_key)


def add_key(args: argparse.Namespace) -> int:
    out: Path = args.token_out.expanduser()
    if out.exists():  # before asking the queen: a key must not be made and then lost
        raise InvalidRequest(f"{shown(out)} already exists; choose a new file for the token")
    with connect(args.queen_url) as queen:
        answer = queen.add_key(args.name, admin=args.admin, models=args.models)
    write_secret_file(out, str(answer.pop("token")))
    key = answer.get("key") or {}
    if args.json:
        print_json({"key": key, "token_file": str(out)})
    else:
        print(f"added key {args.name} ({key.get('fingerprint')}); token written to {out}")
    return 0


def list_keys(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.list_keys()
    keys = answer.get("keys") or []
    if args.json:
        print_json(answer)
    elif not keys:
        note("no named keys: the owner's token is the only one")
    else:
        headers = ["NAME", "ADMIN", "MODELS", "FINGERPRINT", "CREATED"]
        print_table(headers, [key_row(key) for key in keys])
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.revoke_key(args.name)
    if args.json:
        print_json(answer)
    else:
        print(f"revoked key {answer.get('revoked', args.name)}")
    return 0


def key_row(key: dict[str, Any]) -> list[str]:
    models = key.get("models")
    return [
        cell(key.get("name")),
        "yes" if key.get("admin") else "no",
        "all" if models is None else ",".join(models) or "none",
        cell(key.get("fingerprint")),
        cell(key.get("created_at")),
    ]
