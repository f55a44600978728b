"""`rbee-keeper completion SHELL`: the shell code that completes rbee-keeper's words.

argcomplete does the work: the printed code calls rbee-keeper back with the line
typed so far, and `rbee_keeper.cli.main` answers from the real parser, so new
commands and options complete without editing any script.
"""

from __future__ import annotations

import argparse

import argcomplete

from rbee_keeper.commands import Subcommands

SHELLS = ("bash", "zsh", "fish")


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    completion = commands.add_parser(
        "completion",
        help="print shell completion code (bash, zsh, fish)",
        description="Print the code that completes rbee-keeper's commands and options. "
        'bash: eval "$(rbee-keeper completion bash)" in ~/.bashrc; '
        'zsh: eval "$(rbee-keeper completion zsh)" in ~/.zshrc; '
        "fish: rbee-keeper completion fish > ~/.config/fish/completions/rbee-keeper.fish",
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(handler=print_completion)


def print_completion(args: argparse.Namespace) -> int:
    print(argcomplete.shellcode(["rbee-keeper"], shell=args.shell), end="")
    return 0
