"""`rbee-keeper doctor`: what stands between this machine and a working fleet.

The local side first (the queen answers, its token is readable, SSH has an agent
or a key to offer), then every node through add-node's preflight checks (key
through disk), which the queen runs now. Each failed check prints what to do
about it. Doctor never starts a queen: it reports.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rbee_keeper.client import QueenClient
from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import is_loopback
from rbee_keeper.output import print_json
from rbee_keeper.token import TOKEN_FILE_ENV, find_token, rbee_home
from rbee_queen.errors import RbeeError

KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check the queen, the token, SSH and every node; say what to fix",
    )
    doctor.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    findings = list(diagnose(args.queen_url))
    if args.json:
        print_json({"ok": all(f.ok for f in findings), "checks": [f.__dict__ for f in findings]})
    else:
        for finding in findings:
            print(f"{'ok  ' if finding.ok else 'FAIL'} {finding.check}: {finding.detail}")
            if finding.fix:
                print(f"     fix: {finding.fix}")
    return 0 if all(f.ok for f in findings) else 1


def diagnose(queen_url: str) -> Iterator[Finding]:
    token = check_token(queen_url)
    with QueenClient(queen_url) as client:
        queen = check_queen(client, queen_url)
        yield queen
        yield token
        yield check_ssh(os.environ, Path.home() / ".ssh")
        if queen.ok and token.ok:
            yield from check_nodes(client)


def check_queen(client: QueenClient, queen_url: str) -> Finding:
    try:
        version = client.health().get("version", "")
    except RbeeError as error:
        fix = (
            "start it: any rbee-keeper command does (e.g. rbee-keeper setup list-nodes); "
            f"if it fails, read {rbee_home() / 'logs' / 'queen.log'}"
            if is_loopback(queen_url)
            else f"start the queen on that machine, or point --queen-url at it ({error.code})"
        )
        return Finding("queen", False, f"no answer at {queen_url}", fix)
    return Finding("queen", True, f"answers at {queen_url} {version}".strip())


def check_token(queen_url: str) -> Finding:
    try:
        token = find_token()
    except RbeeError as error:
        path = os.environ.get(TOKEN_FILE_ENV) or rbee_home() / "api-token"
        fix = f"chmod 600 {path}, owned by you, the token on one line"
        return Finding("token", False, error.message, fix)
    if token is None:
        fix = (
            "the queen writes it on its first start"
            if is_loopback(queen_url)
            else "copy the queen's api-token here, or set RBEE_API_TOKEN_FILE"
        )
        return Finding("token", False, f"none at {rbee_home() / 'api-token'}", fix)
    return Finding("token", True, "readable")


def check_ssh(environ: os._Environ[str] | dict[str, str], ssh_dir: Path) -> Finding:
    """The queen authenticates with a node's key file, else the ssh-agent."""
    sock = environ.get("SSH_AUTH_SOCK", "")
    agent = bool(sock) and _is_socket(Path(sock))
    keys = [ssh_dir / name for name in KEY_NAMES if (ssh_dir / name).is_file()]
    unreadable = [key for key in keys if not os.access(key, os.R_OK)]
    if unreadable:
        return Finding(
            "ssh", False, f"{unreadable[0]} is not readable", f"chmod 600 {unreadable[0]}"
        )
    if agent or keys:
        found = (["an ssh-agent"] if agent else []) + [str(key) for key in keys]
        return Finding("ssh", True, ", ".join(found))
    detail = f"no ssh-agent (SSH_AUTH_SOCK) and no key in {ssh_dir}"
    return Finding("ssh", False, detail, "ssh-keygen -t ed25519, or give add-node --ssh-key")


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def check_nodes(client: QueenClient) -> Iterator[Finding]:
    """Each node through add-node's own preflight checks, run by the queen now."""
    try:
        nodes = client.node_preflight()["nodes"]
    except RbeeError as error:
        yield Finding("nodes", False, f"[{error.code}] {error.message}", "see the queen's log")
        return
    if not nodes:
        yield Finding("nodes", True, "none yet", "add one: rbee-keeper setup add-node --help")
    for node in nodes:
        name = f"node {node['node_name']}"
        failed = node["failed"]
        if failed is None:
            shown = {c["name"]: c["detail"] for c in node["checks"]}
            detail = f"preflight passed: {shown['python']}, {shown['disk']}, {shown['latency']}"
            yield Finding(name, True, detail)
        else:
            detail = f"[{failed['code']}] {failed['message']}"
            fix = failed["suggestion"] or f"docs/troubleshooting.md, {failed['code']}"
            yield Finding(name, False, detail, fix)
