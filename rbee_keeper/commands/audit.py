"""`rbee-keeper audit verify`: check the queen's hash-chained audit log.

It reads the files directly (on the queen's machine, or a copy of the folder
given with --dir): a check that asked the queen would trust the very process
whose log is being checked. With the anchor key (`RBEE_HOME/audit.key`, or
`audit.key` beside the folder given, or --key) every entry's HMAC is checked
as well, which a writer of the audit files alone cannot forge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rbee_keeper.commands import Subcommands
from rbee_keeper.output import print_json
from rbee_keeper.token import rbee_home
from rbee_queen.audit import KEY_FILE_NAME, load_key, verify
from rbee_queen.errors import AuditChainBroken


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    audit = commands.add_parser("audit", help="check the audit log")
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify", parents=[common], help="verify the hash chain; names the first broken entry"
    )
    check.add_argument(
        "--dir", type=Path, metavar="PATH", help="audit folder (default: $RBEE_HOME/audit)"
    )
    check.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the anchor key (default: audit.key beside the audit folder, when there)",
    )
    check.set_defaults(handler=verify_chain)


def verify_chain(args: argparse.Namespace) -> int:
    directory = (args.dir or rbee_home() / "audit").expanduser()
    key_file = (args.key or directory.parent / KEY_FILE_NAME).expanduser()
    verdict = verify(directory, load_key(key_file))
    if args.json:
        print_json(verdict.as_dict())
        return 0 if verdict.ok else 1
    if not verdict.ok:
        raise AuditChainBroken(
            f"{verdict.broken_file} line {verdict.broken_line}: {verdict.reason} "
            f"({verdict.entries} entries before it are intact)",
            file=verdict.broken_file,
            line=verdict.broken_line,
        )
    anchor = "anchored by its key" if verdict.anchored else "NOT anchored: no key to check"
    print(
        f"audit log intact: {verdict.entries} entries in {verdict.files} file(s), "
        f"last hash {verdict.last_hash[:16]}, {anchor}"
    )
    return 0
