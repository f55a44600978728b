"""One module per command group; each has `register(commands, common)` that adds
its parsers (with `common`, the global options, as a parent) and sets `handler`."""

from __future__ import annotations

import argparse

Subcommands = argparse._SubParsersAction
