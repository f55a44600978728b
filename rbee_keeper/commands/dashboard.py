"""`rbee-keeper dashboard`: the whole fleet, live, in the terminal."""

from __future__ import annotations

import argparse

from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    dashboard = commands.add_parser(
        "dashboard", parents=[common], help="watch the fleet live (Textual)"
    )
    dashboard.add_argument(
        "--read-only",
        action="store_true",
        help="hide the actions (stop, restart, start a worker, add a node)",
    )
    dashboard.set_defaults(handler=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    # Imported here: Textual is only needed by this command.
    from rbee_keeper.tui.app import create_app
    from rbee_keeper.tui.source import QueenActions, QueenSource

    connect(args.queen_url).close()  # fail (or start a local queen) before the screen opens
    app = create_app(
        lambda: QueenSource(args.queen_url),
        None if args.read_only else QueenActions(args.queen_url),
        queen_url=args.queen_url,
        read_only=args.read_only,
    )
    app.run()
    return 0
