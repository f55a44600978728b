"""`rbee-keeper setup ...`: the nodes the queen knows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbee_keeper.client import QueenClient
from rbee_keeper.commands import Subcommands
from rbee_keeper.inventory import load_catalog, load_inventory
from rbee_keeper.inventory_export import export_inventory
from rbee_keeper.local_queen import connect
from rbee_keeper.output import ago, cell, note, print_json, print_table
from rbee_queen.errors import ModelAlreadyExists, RbeeError, SshKeyNotFound
from rbee_wire.error_text import shown


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    setup = commands.add_parser("setup", help="add, list and remove nodes")
    actions = setup.add_subparsers(dest="action", required=True, metavar="ACTION")
    register_add_node(actions, common)
    register_list_nodes(actions, common)
    register_import(actions, common)
    register_export(actions, common)
    register_update_node(actions, common)
    register_install(actions, common)
    register_remove_node(actions, common)


def register_add_node(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    add = actions.add_parser("add-node", parents=[common], help="register a node reached over SSH")
    add.add_argument("--name", required=True, help="the node's name in rbee")
    add.add_argument("--ssh-host", required=True, metavar="HOST")
    add.add_argument(
        "--ssh-port", type=int, metavar="PORT", help="default: 22, or the alias's Port"
    )
    add.add_argument("--ssh-user", metavar="USER", help="default: the alias's User")
    add.add_argument(
        "--ssh-key",
        metavar="PATH",
        help="private key file (default: the alias's IdentityFile, else the queen's ssh-agent)",
    )
    add.add_argument(
        "--install-path", required=True, metavar="PATH", help="rbee's folder on the node"
    )
    add.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust the node's host key on first contact instead of requiring known_hosts",
    )
    add.add_argument(
        "--worker-python",
        metavar="PATH",
        help="python for the node's workers (default: the node's)",
    )
    add_node_settings(add)
    add.set_defaults(handler=add_node)


def register_list_nodes(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    listing = actions.add_parser("list-nodes", parents=[common], help="show the registered nodes")
    listing.set_defaults(handler=list_nodes)


def register_import(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    imports = actions.add_parser(
        "import", parents=[common], help="add every node of an inventory file (TOML)"
    )
    imports.add_argument("file", metavar="INVENTORY", help="see inventory.example.toml")
    imports.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust each node's host key on first contact",
    )
    imports.set_defaults(handler=import_nodes)


def register_export(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    export = actions.add_parser(
        "export",
        parents=[common],
        help="write the nodes, their settings and the model catalog as an inventory file",
    )
    export.add_argument("file", metavar="INVENTORY", help="where to write it (- for stdout)")
    export.set_defaults(handler=export_setup)


def export_setup(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        text = export_inventory(
            queen.list_nodes().get("nodes") or [], queen.list_catalog().get("models") or []
        )
    if args.file == "-":
        print(text, end="")
    else:
        Path(args.file).write_text(text)
        note(f"wrote {args.file}")
    return 0


def register_update_node(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    update = actions.add_parser(
        "update-node",
        parents=[common],
        help="change a node's SSH settings or accept its new host key",
    )
    update.add_argument("--name", required=True, help="the node's name in rbee")
    update.add_argument("--ssh-host", metavar="HOST")
    update.add_argument("--ssh-port", type=int, metavar="PORT")
    update.add_argument("--ssh-user", metavar="USER")
    update.add_argument("--ssh-key", metavar="PATH", help="private key file")
    update.add_argument("--install-path", metavar="PATH")
    update.add_argument("--worker-python", metavar="PATH")
    add_node_settings(update)
    update.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="replace the recorded host key with the one the node offers now "
        "(after a reinstall; verify the fingerprint first)",
    )
    update.set_defaults(handler=update_node)


def register_install(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    inst = actions.add_parser(
        "install",
        parents=[common],
        help="build the node's worker venv (<install-path>/venv) and use it for its workers",
    )
    inst.add_argument("--node", required=True, metavar="NAME", help="the node's name in rbee")
    inst.add_argument(
        "--python",
        metavar="PATH",
        help="the node's interpreter to build the venv from (default: its python3)",
    )
    inst.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let the venv see --python's packages (reuse a torch already installed there)",
    )
    inst.add_argument(
        "--no-deps",
        "--offline",
        dest="no_deps",
        action="store_true",
        help="install only rbee, no packages from an index; --python must already have torch"
        " and the rest (implies --system-site-packages)",
    )
    inst.add_argument("--index-url", metavar="URL", help="the package index pip uses on the node")
    inst.set_defaults(handler=install_node)


def register_remove_node(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    remove = actions.add_parser("remove-node", parents=[common], help="forget a node")
    remove.add_argument("--name", required=True, help="the node's name in rbee")
    remove.set_defaults(handler=remove_node)


def add_node_settings(parser: argparse.ArgumentParser) -> None:
    """The node's settings that add-node and update-node both take (an update
    without them keeps the node's values)."""
    parser.add_argument(
        "--worker-access",
        choices=("ssh", "direct"),
        help="how the queen reaches the node's workers: ssh (a port forward, the default) "
        "or direct (the worker's port on the node's address; see docs/security.md)",
    )
    parser.add_argument(
        "--model-source",
        choices=("queen", "hub"),
        help="where hf: downloads run: queen (fetched there, copied over SFTP; the default) "
        "or hub (on the node itself, which must reach the hub)",
    )
    parser.add_argument(
        "--worker-memory-limit",
        type=int,
        metavar="MIB",
        help="each worker's RAM bound on the node, in MiB, unless its model sets one "
        "(0: the queen's workers.memory_limit_mib; -1: no bound)",
    )


def add_node(args: argparse.Namespace) -> int:
    request = node_request(args)
    with connect(args.queen_url) as queen:
        answer = queen.add_node(request)
    if args.json:
        print_json(answer)
    else:
        node = answer.get("node") or request
        print(f"added node {args.name} ({ssh_target(node)}, {node.get('status', 'unknown')})")
        checks = answer.get("preflight") or []
        if checks:
            print("preflight: " + ", ".join(f"{c['name']} ok ({c['detail']})" for c in checks))
    return 0


def list_nodes(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.list_nodes()
    nodes = answer.get("nodes") or []
    if args.json:
        print_json(answer)
    elif not nodes:
        note("no nodes yet: add one with `rbee-keeper setup add-node`")
    else:
        headers = ["NAME", "SSH TARGET", "STATUS", "LAST CONNECTED", "BACKENDS", "MEMORY"]
        print_table(headers, [node_row(node) for node in nodes])
    return 0


def import_nodes(args: argparse.Namespace) -> int:
    requests = load_inventory(Path(args.file))
    for request in requests:
        if request.get("ssh_key_path"):
            existing_file(request["ssh_key_path"])  # before any network call
        request["accept_new_host_key"] = args.accept_new_host_key
    models = load_catalog(Path(args.file))
    with connect(args.queen_url) as queen:
        answer = queen.import_nodes(requests)
        answer["models"] = import_catalog(queen, models)
    if args.json:
        print_json(answer)
    else:
        for node in answer.get("added") or []:
            print(f"added    {node['node_name']} ({ssh_target(node)})")
        for name in answer.get("existing") or []:
            print(f"exists   {name} (left as it is)")
        for name, error in (answer.get("failed") or {}).items():
            print(f"failed   {name}: [{error.get('code')}] {error.get('message')}")
        for name, outcome in answer["models"].items():
            word, _, why = outcome.partition(": ")
            print(f"{word:<8} model {name}" + (f": {why}" if why else ""))
    failed = any(o.startswith("failed") for o in answer["models"].values())
    return 1 if answer.get("failed") or failed else 0


def import_catalog(queen: QueenClient, models: list[dict[str, Any]]) -> dict[str, str]:
    """Add each catalog entry; one already there is left as it is."""
    outcome = {}
    for body in models:
        try:
            queen.add_catalog(body)
            outcome[body["name"]] = "added"
        except ModelAlreadyExists:
            outcome[body["name"]] = "exists"
        except RbeeError as exc:
            outcome[body["name"]] = f"failed: [{exc.code}] {exc.message}"  # the rest go on
    return outcome


def update_node(args: argparse.Namespace) -> int:
    request = node_request(args)
    with connect(args.queen_url) as queen:
        answer = queen.update_node({k: v for k, v in request.items() if v is not None})
    if args.json:
        print_json(answer)
    else:
        node = answer.get("node") or {}
        print(f"updated node {args.name} ({ssh_target(node)}, {node.get('status', 'unknown')})")
        if answer.get("accepted_host_key"):
            print(f"accepted host key {answer['accepted_host_key']}")
    return 0


def install_node(args: argparse.Namespace) -> int:
    request = {
        "node_name": args.node,
        "python": args.python,
        # Without an index the worker's packages can only come from --python's own.
        "system_site_packages": args.system_site_packages or args.no_deps,
        "no_deps": args.no_deps,
        "index_url": args.index_url,
    }
    note(f"installing on {args.node} (building the wheel, then pip on the node)...")
    with connect(args.queen_url) as queen:
        answer = queen.install_node({k: v for k, v in request.items() if v is not None})
    if args.json:
        print_json(answer)
        return 0
    for step in answer.get("steps") or []:
        seconds = f" ({step['seconds']:.1f}s)" if "seconds" in step else ""
        print(f"  {step['step']:<8} {step.get('detail', '')}{seconds}")
    if answer.get("changed"):
        print(f"installed on {args.node}: workers now run {answer['worker_python']}")
    else:
        print(f"{args.node} is up to date: workers run {answer['worker_python']}")
    return 0


def remove_node(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.remove_node(args.name)
    if args.json:
        print_json(answer)
    else:
        print(f"removed node {answer.get('removed', args.name)}")
    return 0


def node_request(args: argparse.Namespace) -> dict[str, Any]:
    """The add/update body from the command's flags; the key file is checked
    here, before any network call."""
    key_path = existing_file(args.ssh_key) if args.ssh_key else None
    # Only when given: an update without them keeps the node's settings.
    given = {
        field: value
        for field, value in (
            ("worker_access", args.worker_access),
            ("model_source", args.model_source),
            ("worker_memory_limit_mib", args.worker_memory_limit),
        )
        if value is not None
    }
    return given | {
        "node_name": args.name,
        "ssh_host": args.ssh_host,
        "ssh_port": args.ssh_port,
        "ssh_user": args.ssh_user,
        "ssh_key_path": str(key_path) if key_path else None,
        "install_path": args.install_path,
        "worker_python": args.worker_python,
        "accept_new_host_key": args.accept_new_host_key,
    }


def existing_file(path_text: str) -> Path:
    path = Path(path_text).expanduser().absolute()
    try:
        found = path.is_file()
    except OSError:  # a name too long for the file system, say
        found = False
    if not found:
        raise SshKeyNotFound(f"SSH key not found: {shown(path)}", field="ssh_key_path")
    return path


def node_row(node: dict[str, Any]) -> list[str]:
    return [
        cell(node.get("node_name")),
        ssh_target(node),
        cell(node.get("status") or "unknown"),
        ago(node.get("last_connected"), missing="never"),
        backends_and_devices(node),
        memory_setting(node.get("worker_memory_limit_mib")),
    ]


def memory_setting(mib: Any) -> str:
    """The node's bound for its workers: `2048 MiB`, `none`, or `-` (the queen's applies)."""
    if not isinstance(mib, int) or mib == 0:
        return "-"
    return "none" if mib < 0 else f"{mib} MiB"


def ssh_target(node: dict[str, Any]) -> str:
    return f"{node.get('ssh_user')}@{node.get('ssh_host')}:{node.get('ssh_port')}"


def backends_and_devices(node: dict[str, Any]) -> str:
    """`cuda=2 cpu=1`: each backend with its device count."""
    devices = node.get("devices") or {}
    backends = node.get("backends") or list(devices)
    return " ".join(f"{backend}={devices.get(backend, '?')}" for backend in backends) or "-"
