"""Errors that name their real cause: an unreadable model file."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.loading import BackendHolder, LoadState


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's own tmp folders are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="rbee-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def load_as_nobody(model_dir: Path) -> list[str]:
    """root reads every file, so the load runs as nobody, as a node's login would.

    A forked child drops to nobody and loads; the parent reads its state and error.
    Forked, not exec'd: nobody may not reach this machine's interpreter.
    """
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            holder = BackendHolder(TorchBackend(model_dir, "cpu"))
            holder.load()
            os.write(write_end, f"{holder.state.value}\n{holder.error}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        lines = answer.read().splitlines()
    os.waitpid(pid, 0)
    return lines


def test_an_unreadable_weight_file_says_permission_denied_for_the_user(
    tiny_model_dir: Path, open_dir: Path
) -> None:
    model = open_dir / "model"
    shutil.copytree(tiny_model_dir, model)
    model.chmod(0o755)
    for path in model.iterdir():
        path.chmod(0o644)
    (model / "model.safetensors").chmod(0o600)
    if os.geteuid() == 0:
        state, error = load_as_nobody(model)
        user = "nobody"
    else:
        holder = BackendHolder(TorchBackend(model, "cpu"))
        holder.load()
        state, error, user = holder.state.value, holder.error or "", pwd.getpwuid(os.geteuid())[0]
    assert state == LoadState.FAILED.value
    assert error == f"permission denied for user {user}: cannot read {model / 'model.safetensors'}"


def test_a_readable_model_is_not_held_up(tiny_model_dir: Path) -> None:
    holder = BackendHolder(TorchBackend(tiny_model_dir, "cpu"))
    holder.load()
    assert holder.state is LoadState.READY, holder.error


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the load as another user")
def test_an_unreadable_model_folder_names_the_folder(tiny_model_dir: Path, open_dir: Path) -> None:
    model = open_dir / "model"
    shutil.copytree(tiny_model_dir, model)
    model.chmod(0o700)
    state, error = load_as_nobody(model)
    assert state == "failed" and error == f"permission denied for user nobody: cannot read {model}"
