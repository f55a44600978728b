"""The CLI's habits: --version, and completion code that real shells load and run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

KEEPER = [sys.executable, "-m", "rbee_keeper"]


def keeper(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEEPER, *argv], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
    )


def test_version_names_the_installed_release() -> None:
    done = keeper("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"rbee-keeper {version('rbee')}"


def complete(line: str, tmp_path: Path) -> list[str]:
    """Ask rbee-keeper for completions the way the shell hook does (argcomplete's protocol)."""
    out = tmp_path / "candidates"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_SHELL": "bash",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
    }
    done = keeper(env=env)
    assert done.returncode == 0, done.stderr
    return [word.strip() for word in out.read_text().split("\n")]


def test_completion_answers_from_the_real_parser(tmp_path: Path) -> None:
    assert complete("rbee-keeper do", tmp_path) == ["doctor"]
    assert "add-node" in complete("rbee-keeper setup ", tmp_path)
    assert complete("rbee-keeper setup add-node --ssh-h", tmp_path) == ["--ssh-host"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_code_for_each_shell(shell: str) -> None:
    done = keeper("completion", shell)
    assert done.returncode == 0
    assert "rbee-keeper" in done.stdout and "_ARGCOMPLETE" in done.stdout
    if shell == "bash":
        # bash loads it and registers a completion function for rbee-keeper.
        check = subprocess.run(
            ["bash", "-c", 'eval "$1" && complete -p rbee-keeper', "-", done.stdout],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0 and "rbee-keeper" in check.stdout
    elif shutil.which(shell):
        check = subprocess.run(
            [shell, "-n"], input=done.stdout, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stderr
    else:  # no zsh or fish here (scripts/bootstrap installs them): the structure instead
        STRUCTURE[shell](done.stdout)


def zsh_structure(script: str) -> None:
    """argcomplete's zsh code is also valid bash; zsh loads it through compdef."""
    assert script.startswith("#compdef rbee-keeper\n")
    assert "compdef _python_argcomplete rbee-keeper" in script
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def fish_structure(script: str) -> None:
    """Every fish block closed by its `end`; `complete` calls the function defined."""
    opens = ("function ", "if ", "else if ", "for ", "while ", "switch ", "begin")
    depth = 0
    for line in (raw.strip() for raw in script.splitlines()):
        if line.startswith(opens) and not line.startswith("else if "):
            depth += 1
        elif line == "end":
            depth -= 1
        assert depth >= 0, line
    assert depth == 0
    (name,) = re.findall(r"^function (\S+)$", script, re.MULTILINE)
    assert f"complete --command rbee-keeper -f -a '({name})'" in script


def test_the_fish_protocol_gives_tab_separated_words(tmp_path: Path) -> None:
    out = tmp_path / "candidates"
    line = "rbee-keeper do"
    env = {
        **os.environ,
        **{"_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "fish", "_ARGCOMPLETE_DFS": "\t"},
        **{"_ARGCOMPLETE_IFS": "\n", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)},
        **{"COMP_LINE": line, "COMP_POINT": str(len(line))},
    }
    assert keeper(env=env).returncode == 0
    # fish reads `word<TAB>description` lines; the tab comes even where help is empty.
    (candidate,) = out.read_text().splitlines()
    assert candidate.split("\t")[0].strip() == "doctor" and "\t" in candidate


STRUCTURE = {"zsh": zsh_structure, "fish": fish_structure}


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = keeper("completion", "tcsh")
    assert done.returncode == 2 and "invalid choice" in done.stderr
