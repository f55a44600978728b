"""`rbee-keeper completion zsh|fish` loaded in the real shells, completing real words.

zsh: an interactive zsh on a pseudo-terminal (zsh's own zpty) loads compinit and
the printed code, is sent `rbee-keeper se<TAB>`, and a key bound to a widget
writes the line as the completion left it. fish: `complete -C LINE` prints the
candidates fish would offer. Both call rbee-keeper back through argcomplete, so
the answers come from the real parser. scripts/bootstrap installs both shells:
one missing fails here, nothing is skipped. (bash: tests/test_newcomer_cli.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # where the rbee-keeper script is installed

# Runs in `zsh -f`: drives an interactive zsh on a pty; $1 is the file the line
# goes to, $2 the keys typed before <TAB>. ^X writes the line and ends the shell.
ZSH_DRIVER = r"""
zmodload zsh/zpty
out=$1
zpty shell zsh -f -i
zpty -w shell "PS1='> '; autoload -U compinit && compinit -u -D"
zpty -w shell 'eval "$(rbee-keeper completion zsh)"'
zpty -w shell "save-line() { print -r -- \"\$BUFFER\" >| ${(q)out}; exit }"
zpty -w shell "zle -N save-line; bindkey '^X' save-line"
zpty -w -n shell "$2"$'\t\C-x'
for i in {1..600}; do [[ -s $out ]] && break; sleep 0.05; done
zpty -d shell
"""


def shell(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (scripts/bootstrap installs it)")
    return found


def environment(tmp_path: Path) -> dict[str, str]:
    assert (BIN / "rbee-keeper").exists()
    # A home of its own: no rc file, no fish history; an empty folder to run in,
    # so a file name can never pass for a completed word.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(home)}


def zsh_completes(typed: str, tmp_path: Path) -> str:
    """The line after zsh completed `typed` with rbee-keeper's zsh code."""
    out = tmp_path / "line"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [shell("zsh"), "-f", "-c", ZSH_DRIVER, "zsh", str(out), typed],
        cwd=tmp_path / "home",
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return out.read_text().rstrip("\n")


def fish_candidates(typed: str, tmp_path: Path) -> list[str]:
    """The words fish offers for `typed` with rbee-keeper's fish code loaded."""
    script = f"rbee-keeper completion fish | source; complete -C {typed!r}"
    done = subprocess.run(
        [shell("fish"), "--no-config", "-c", script],
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t")[0] for line in done.stdout.splitlines()]


def test_zsh_completes_a_command_and_an_option(tmp_path: Path) -> None:
    assert zsh_completes("rbee-keeper se", tmp_path) == "rbee-keeper setup "
    typed = "rbee-keeper setup add-node --ssh-h"
    assert zsh_completes(typed, tmp_path) == "rbee-keeper setup add-node --ssh-host "


def test_fish_offers_a_command_and_an_option(tmp_path: Path) -> None:
    assert fish_candidates("rbee-keeper se", tmp_path) == ["setup"]
    assert "add-node" in fish_candidates("rbee-keeper setup ", tmp_path)
    assert fish_candidates("rbee-keeper setup add-node --ssh-h", tmp_path) == ["--ssh-host"]
