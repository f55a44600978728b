"""`rbee-keeper models ...`: the model folders on each node, and the catalog of
model names the queen serves."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rbee_keeper.client import TaskStream, error_from_event
from rbee_keeper.commands import Subcommands, models_catalog
from rbee_keeper.local_queen import connect
from rbee_keeper.output import cell, note, print_json, print_json_line, print_table

REF_HELP = models_catalog.REF_HELP


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser("models", help="list, download, copy and remove models on nodes")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    register_list(actions, common)
    register_download(actions, common)
    register_copy(actions, common)
    register_remove(actions, common)
    models_catalog.register_actions(actions, common)


def register_list(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    listing = actions.add_parser("list", parents=[common], help="the models on the nodes")
    listing.add_argument("--node", metavar="NODE", help="only this node")
    listing.set_defaults(handler=list_models)


def register_download(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    download = actions.add_parser(
        "download", parents=[common], help="download a model from the hub to a node"
    )
    download.add_argument("--node", required=True, metavar="NODE")
    download.add_argument("ref", metavar="REF", help=REF_HELP)
    download.add_argument(
        "--allow-bin",
        action="store_true",
        help="also fetch pickled pytorch_model*.bin weights (loading them runs code)",
    )
    download.set_defaults(handler=download_model)


def register_copy(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    copy = actions.add_parser(
        "copy", parents=[common], help="copy a model from one node to another"
    )
    copy.add_argument("--from", required=True, dest="source", metavar="NODE")
    copy.add_argument("--to", required=True, dest="dest", metavar="NODE")
    copy.add_argument("ref", metavar="REF", help=REF_HELP)
    copy.set_defaults(handler=copy_model)


def register_remove(actions: Subcommands, common: argparse.ArgumentParser) -> None:
    remove = actions.add_parser(
        "remove", parents=[common], help="delete a model from a node (refused while in use)"
    )
    remove.add_argument("--node", required=True, metavar="NODE")
    remove.add_argument("ref", metavar="REF", help=REF_HELP)
    remove.set_defaults(handler=remove_model)


def list_models(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.list_node_models(args.node)
    models = answer.get("models") or []
    if args.json:
        print_json(answer)
    elif not models:
        note("no models on the nodes")
    else:
        headers = ["NODE", "MODEL", "STATUS", "SIZE", "FILES", "DOWNLOADED", "LAST USED"]
        print_table(headers, [model_row(m) for m in models])
    return 0


def download_model(args: argparse.Namespace) -> int:
    body = {"node": args.node, "model": args.ref, "allow_bin": args.allow_bin}
    with connect(args.queen_url) as queen:
        done = follow(queen.model_transfer("download", body), args.json)
    if not args.json:
        how = "already there" if done.get("already") else "downloaded"
        print(f"{args.ref} {how} on {args.node}: {done['model']['local_path']}")
    return 0


def copy_model(args: argparse.Namespace) -> int:
    body = {"from": args.source, "to": args.dest, "model": args.ref}
    with connect(args.queen_url) as queen:
        done = follow(queen.model_transfer("copy", body), args.json)
    if not args.json:
        print(f"copied {args.ref} from {args.source} to {args.dest}: {done['model']['local_path']}")
    return 0


def remove_model(args: argparse.Namespace) -> int:
    with connect(args.queen_url) as queen:
        answer = queen.remove_node_model(args.node, args.ref)
    if args.json:
        print_json(answer)
    else:
        print(f"removed {args.ref} from {args.node}")
    return 0


def follow(stream: TaskStream, as_json: bool) -> dict[str, Any]:
    """Show a transfer's progress (a bar on a terminal, JSON lines with --json);
    return its `done` event or raise its error."""
    with (
        stream,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=None if sys.stderr.isatty() else _quiet_console(),
            disable=as_json,
        ) as bar,
    ):
        task = bar.add_task("starting", total=None)
        for event in stream.events():
            if as_json:
                print_json_line(event)
            kind = event.get("type")
            if kind == "start":
                bar.update(task, total=event.get("bytes_total"), description=event["model"])
            elif kind == "progress":
                bar.update(task, completed=event["bytes_done"], description=event["file"])
            elif kind in ("skip", "resume"):  # already there, or left by a cut-off run
                bar.advance(task, event.get("bytes", 0))
            elif kind == "error":
                raise error_from_event(event)
            elif kind == "done":
                return event
    raise error_from_event({"code": "DOWNLOAD_FAILED", "message": "the transfer ended early"})


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, quiet=True)


def model_row(model: dict[str, Any]) -> list[str]:
    size = f"{model.get('size_bytes', 0) / 1024**2:.1f} MiB"
    values = [model.get("node"), model.get("ref"), model.get("status"), size]
    values += [len(model.get("files") or []), model.get("downloaded_at"), model.get("last_used")]
    return [cell(value) for value in values]
