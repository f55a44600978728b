"""The CLI reference in docs/cli.md, generated from the parser itself.

`python -m rbee_keeper.reference > docs/cli.md` rewrites it; a test fails when
the file and the parser drift apart.
"""

from __future__ import annotations

import argparse
import os

from rbee_keeper.cli import build_parser

HEADER = """# rbee-keeper CLI reference

Generated from `rbee-keeper --help` by `python -m rbee_keeper.reference`; do not
edit by hand. Exit codes: 0 success, 1 failure (one `error: [CODE] message` line
on stderr), 2 usage error, 130 interrupted (Ctrl-C).
"""


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
    return found


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str]]:
    pages = [(path, parser.format_help())]
    for name, sub in _subparsers(parser):
        pages.extend(_walk(sub, f"{path} {name}"))
    return pages


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it
    parts = [HEADER]
    for path, text in _walk(build_parser(), "rbee-keeper"):
        parts.append(f"## `{path}`\n\n```\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
