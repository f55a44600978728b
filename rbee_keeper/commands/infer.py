"""`rbee-keeper infer`: run one prompt on a node and print the tokens as they arrive."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rbee_keeper.client import QueenClient, TaskStream, error_from_event
from rbee_keeper.commands import Subcommands
from rbee_keeper.local_queen import connect
from rbee_keeper.output import note, print_json_line
from rbee_queen.errors import AllSlotsBusy

# The original rbee's policy when every slot is taken: retry after 1, 2, 4 s, then fail.
BUSY_RETRY_DELAYS_S = (1.0, 2.0, 4.0)


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    infer = commands.add_parser(
        "infer", parents=[common], help="run a prompt on a node, printing tokens as they arrive"
    )
    infer.add_argument(
        "--node", help="the node's name in rbee (optional for a model from the catalog)"
    )
    infer.add_argument(
        "--model", required=True, metavar="REF", help="file:/absolute/path or a catalog name"
    )
    infer.add_argument("--prompt", required=True)
    infer.add_argument("--max-tokens", type=int, default=20, metavar="N", help="default: 20")
    infer.add_argument("--temperature", type=float, default=0.7, help="default: 0.7")
    infer.add_argument("--seed", type=int, help="for reproducible sampling")
    infer.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling, 0..1")
    infer.add_argument("--top-k", type=int, metavar="K", help="keep the K most likely (0: off)")
    infer.add_argument("--min-p", type=float, metavar="P", help="drop tokens below P x the top")
    infer.add_argument(
        "--repetition-penalty", type=float, metavar="X", help="above 1 discourages repeats"
    )
    infer.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop before this text (up to 4 times)"
    )
    infer.add_argument(
        "--backend",
        choices=("cpu", "cuda"),
        help="cuda: an exllamav2 worker on a GPU; cpu: a torch worker (default: cpu,"
        " or the catalog's)",
    )
    infer.add_argument(
        "--device", type=int, metavar="N", help="GPU ordinal (default: the most free VRAM)"
    )
    infer.set_defaults(handler=infer_command)


def infer_command(args: argparse.Namespace) -> int:
    task: dict[str, Any] = {
        "model": args.model,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    optional = {
        "node": args.node,
        "seed": args.seed,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "stop": args.stop,
        "backend": args.backend,
        "device": args.device,
    }
    task.update({k: v for k, v in optional.items() if v is not None})
    # Leaving these blocks early (Ctrl-C, an error) closes the stream, and the
    # queen cancels the job when it sees the disconnect.
    with connect(args.queen_url) as queen, start_when_slot_free(queen, task) as stream:
        follow(stream, as_json=args.json)
    return 0


def start_when_slot_free(queen: QueenClient, task: dict[str, Any]) -> TaskStream:
    for delay in BUSY_RETRY_DELAYS_S:
        try:
            return queen.start_task(task)
        except AllSlotsBusy as busy:
            note(f"{busy.message}; retrying in {delay:g} s")
            time.sleep(delay)
    return queen.start_task(task)


def follow(stream: TaskStream, *, as_json: bool) -> None:
    text = TokenText()
    try:
        for event in stream.events():
            kind = event.get("type")
            if as_json:
                print_json_line(event)
            elif kind == "token":
                text.write(str(event.get("t", "")))
            if kind == "end":
                text.end_line()
                note(summary(event))
            elif kind == "error":
                raise error_from_event(event)
    finally:
        text.end_line()


def summary(end: dict[str, Any]) -> str:
    tokens, decode_ms = end.get("tokens_out"), end.get("decode_time_ms")
    line = f"{tokens} tokens, stop_reason {end.get('stop_reason')}, decode {decode_ms} ms"
    if isinstance(tokens, int) and isinstance(decode_ms, int | float) and decode_ms > 0:
        line += f" ({tokens / decode_ms * 1000:.1f} tokens/s)"
    return line


class TokenText:
    """Token text on stdout, flushed piece by piece; the line is ended exactly once,
    however the stream ends, so what follows on stderr starts on its own line."""

    def __init__(self) -> None:
        self.line_open = False

    def write(self, piece: str) -> None:
        if piece:
            # Set first: a Ctrl-C right after the flush must still end the line.
            self.line_open = not piece.endswith("\n")
            sys.stdout.write(piece)
            sys.stdout.flush()

    def end_line(self) -> None:
        if self.line_open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.line_open = False
