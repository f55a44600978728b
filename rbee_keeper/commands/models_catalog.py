"""`rbee-keeper models catalog|serve|update|unserve`: the catalog of model names
the queen serves (/v1 API), each with its nodes, slots, device and RAM bound."""

from __future__ import annotations

import argparse
from typing import Any

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import cell, note, print_json, print_table

REF_HELP = "hf:Org/Repo[@revision]"


def register_actions(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    catalog = actions.add_parser(
        "catalog",
        parents=[common],
        help="the model names the queen serves (/v1/models) and the nodes it routes them to",
    )
    catalog.set_defaults(handler=list_catalog)
    register_serve(actions, common)
    register_update(actions, common)
    unserve = actions.add_parser(
        "unserve", parents=[common], help="remove a name from the catalog (files stay on nodes)"
    )
    unserve.add_argument("name")
    unserve.set_defaults(handler=unserve_model)


def register_serve(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    serve = actions.add_parser(
        "serve",
        parents=[common],
        help="add a name to the catalog: the queen serves it on the nodes given (/v1 API)",
    )
    serve.add_argument("name", help="the name clients ask for (OpenAI's `model`)")
    serve.add_argument(
        "--model", required=True, metavar="REF", help="file:/absolute/path or " + REF_HELP
    )
    add_settings(serve, adding=True)
    serve.set_defaults(handler=serve_model)


def register_update(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    update = actions.add_parser(
        "update",
        parents=[common],
        help="change a catalog name's settings, only those given (running workers keep theirs)",
    )
    update.add_argument("name", help="the catalog name to change")
    add_settings(update, adding=False)
    update.set_defaults(handler=update_model)


def add_settings(parser: argparse.ArgumentParser, *, adding: bool) -> None:
    """The settings `serve` sets and `update` changes, spelled the same for both."""
    parser.add_argument(
        "--node",
        required=adding,
        action="append",
        metavar="NODE",
        help="a node it may run on; repeat for several, in order of preference"
        + ("" if adding else " (replaces the list)"),
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=1 if adding else None,
        help="requests one worker serves at once",
    )
    parser.add_argument(
        "--backend",
        choices=("cpu", "cuda"),
        help="cuda runs exllamav2 workers, cpu torch workers"
        + (" (default: cpu)" if adding else ""),
    )
    parser.add_argument(
        "--device",
        type=int,
        metavar="N",
        help="pin GPU N" + (" (default: most free VRAM)" if adding else " (with --backend cuda)"),
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        metavar="MIB",
        help="each worker's RAM bound in MiB, before the node's and the queen's setting "
        "(-1: no bound; default: theirs, else the model's RAM estimate plus the runtime's)"
        if adding
        else "each worker's RAM bound in MiB (-1: no bound; 0: the node's or queen's setting)",
    )


def settings_body(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, named as the queen's API names them."""
    given = {
        "nodes": args.node,
        "slots": args.slots,
        "backend": args.backend,
        "device": args.device,
        "memory_limit_mib": args.memory_limit,
    }
    return {field: value for field, value in given.items() if value is not None}


def list_catalog(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.list_catalog()
    models = answer.get("models") or []
    if args.json:
        print_json(answer)
    elif not models:
        note("no models in the catalog")
    else:
        rows = [
            [cell(m.get("name")), cell(m.get("model_ref")), ",".join(m.get("nodes") or [])]
            + [cell(m.get("slots")), cell(m.get("device")), memory_cell(m)]
            for m in models
        ]
        print_table(["NAME", "MODEL", "NODES", "SLOTS", "DEVICE", "MEMORY"], rows)
    return 0


def serve_model(args: argparse.Namespace) -> int:
    body = {"name": args.name, "model_ref": args.model, **settings_body(args)}
    with connect(args.queen_url) as queen:
        answer = queen.add_catalog(body)
    if args.json:
        print_json(answer)
    else:
        entry = answer["model"]
        nodes = ", ".join(entry["nodes"])
        print(f"serving {entry['name']} ({entry['model_ref']}) on {nodes}, {entry['device']}")
    return 0


def update_model(args: argparse.Namespace) -> int:
    body = {"name": args.name, **settings_body(args)}
    with connect(args.queen_url) as queen:
        answer = queen.update_catalog(body)
    if args.json:
        print_json(answer)
    else:
        entry = answer["model"]
        nodes = ", ".join(entry["nodes"])
        print(
            f"serving {entry['name']} ({entry['model_ref']}) on {nodes}, {entry['device']}, "
            f"{entry['slots']} slots, memory {memory_cell(entry)}"
        )
    return 0


def memory_cell(entry: dict[str, Any]) -> str:
    """The catalog model's RAM bound setting: `-` where the node's or queen's applies."""
    mib = entry.get("memory_limit_mib")
    if not isinstance(mib, int) or mib == 0:
        return "-"
    return "none" if mib < 0 else f"{mib} MiB"


def unserve_model(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.remove_catalog(args.name)
    if args.json:
        print_json(answer)
    else:
        print(f"no longer serving {args.name}")
    return 0
