"""The worker's virtual environment on the node: `<install_path>/venv`.

`install_venv` builds the whole environment in a temporary folder next to the
final one and renames it into place only when every step worked, so a failed
install leaves the node exactly as it was (the old venv, or none). A marker
file inside the venv records what was installed; `install_status` reads it so
the queen can skip an install whose wheel and options are already there.

Every command is an argv list run without a shell.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rbee_hive.ops import OpError

VENV = "venv"
MARKER = "rbee-install.json"
# Imported in the new venv before it replaces the old one: what the worker needs.
WORKER_MODULES = ("starlette", "uvicorn", "torch", "transformers", "safetensors", "tokenizers")
# Runs in the new venv; module names arrive as argv, never inside the code.
_IMPORT_CHECK = (
    "import importlib, json, sys\n"
    "missing = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except Exception as exc:\n"
    "        missing[name] = f'{type(exc).__name__}: {exc}'[:200]\n"
    "print(json.dumps(missing))\n"
)
# Runs under the chosen interpreter: is it itself a venv, and where are its packages?
_SITE_QUERY = (
    "import json, site, sys\n"
    "print(json.dumps({'venv': sys.prefix != sys.base_prefix,"
    " 'site': site.getsitepackages(), 'version': sys.version.split()[0]}))\n"
)


def install_status(install_path: str) -> dict[str, Any]:
    venv = os.path.join(os.path.expanduser(install_path), VENV)
    marker = _read_marker(venv)
    python = os.path.join(venv, "bin", "python")
    if marker is None or not os.path.exists(python):
        return {"installed": False, "venv": venv}
    return {"installed": True, "venv": venv, "python": python, **marker}


def install_venv(
    install_path: str,
    wheel: str,
    key: str,
    python: str = "",
    system_site_packages: bool = False,
    no_deps: bool = False,
    extra: str = "worker",
    index_url: str = "",
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Create `<install_path>/venv` with `wheel[extra]`; `key` names what was asked
    (wheel hash and options) and is recorded so the same request is a no-op."""
    base = os.path.realpath(os.path.expanduser(install_path))
    final = os.path.join(base, VENV)
    if not os.path.isfile(wheel):
        raise OpError("INSTALL_FAILED", f"wheel not found on the node: {wheel}")
    python = python or sys.executable
    steps: list[dict[str, Any]] = []
    with _install_lock(base):
        current = _read_marker(final)
        if current is not None and current.get("key") == key:
            return {"changed": False, "python": os.path.join(final, "bin", "python"), "steps": []}
        tmp = os.path.join(base, f".{VENV}.tmp-{os.getpid()}-{time.monotonic_ns()}")
        try:
            _build(
                tmp,
                final,
                wheel,
                python,
                system_site_packages,
                no_deps,
                extra,
                index_url,
                timeout_s,
                steps,
            )
            _write_marker(
                tmp,
                {
                    "key": key,
                    "wheel": os.path.basename(wheel),
                    "base_python": python,
                    "installed_at": time.time(),
                },
            )
            _swap_into_place(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    steps.append({"step": "activate", "detail": final})
    return {"changed": True, "python": os.path.join(final, "bin", "python"), "steps": steps}


def _build(
    tmp: str,
    final: str,
    wheel: str,
    python: str,
    system_site_packages: bool,
    no_deps: bool,
    extra: str,
    index_url: str,
    timeout_s: float,
    steps: list[dict[str, Any]],
) -> None:
    info = json.loads(_run([python, "-c", _SITE_QUERY], "python", 60, steps, f"--python {python}"))
    steps[-1]["detail"] = f"{python} (Python {info['version']})"
    venv_argv = [python, "-m", "venv"]
    if system_site_packages:
        venv_argv.append("--system-site-packages")
    _run([*venv_argv, tmp], "venv", 300, steps, "create the venv")
    tmp_python = os.path.join(tmp, "bin", "python")
    if system_site_packages and info["venv"]:
        # `venv --system-site-packages` reaches only the base interpreter's packages;
        # a --python that is itself a venv should lend its own packages too.
        _link_parent_site(tmp_python, info["site"])
    pip = [tmp_python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if no_deps:
        pip.append("--no-deps")
    if index_url:
        pip += ["--index-url", index_url]
    target = f"{wheel}[{extra}]" if extra else wheel
    _run([*pip, target], "pip", timeout_s, steps, "install " + os.path.basename(wheel))
    missing = json.loads(
        _run(
            [tmp_python, "-c", _IMPORT_CHECK, *WORKER_MODULES],
            "check",
            600,
            steps,
            "import the worker's packages",
        )
    )
    if missing:
        names = ", ".join(f"{name} ({why})" for name, why in sorted(missing.items()))
        hint = (
            "install them into --python's environment, or drop --no-deps"
            if no_deps
            else "check the node's package index"
        )
        raise OpError("DEPENDENCIES_MISSING", f"the new venv cannot import: {names}; {hint}")
    _relocate_scripts(os.path.join(tmp, "bin"), tmp, final)


def _run(
    argv: list[str], step: str, timeout_s: float, steps: list[dict[str, Any]], detail: str
) -> str:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise OpError("INSTALL_FAILED", f"{step}: cannot run {argv[0]}: {exc.strerror}") from exc
    except PermissionError as exc:
        raise OpError("INSTALL_FAILED", f"{step}: cannot run {argv[0]}: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OpError("INSTALL_FAILED", f"{step}: no result within {timeout_s:g}s") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {done.returncode}"
        raise OpError("INSTALL_FAILED", f"{step} failed: {last[:300]}")
    steps.append({"step": step, "detail": detail, "seconds": round(time.monotonic() - started, 2)})
    return done.stdout


def _link_parent_site(tmp_python: str, parent_site: list[str]) -> None:
    out = subprocess.run(
        [tmp_python, "-c", "import site, json; print(json.dumps(site.getsitepackages()))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    own_site = json.loads(out)[0]
    with open(os.path.join(own_site, "_rbee_parent_site.pth"), "w") as fh:
        fh.write("".join(path + "\n" for path in parent_site if os.path.isdir(path)))


def _relocate_scripts(bin_dir: str, old: str, new: str) -> None:
    """Scripts in bin/ name the folder they were installed into (shebangs, the
    activate scripts); point them at the final folder before the rename."""
    old_b, new_b = old.encode(), new.encode()
    for name in os.listdir(bin_dir):
        path = os.path.join(bin_dir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        if old_b in data and b"\0" not in data:
            mode = os.stat(path).st_mode
            with open(path, "wb") as fh:
                fh.write(data.replace(old_b, new_b))
            os.chmod(path, mode)


def _swap_into_place(tmp: str, final: str) -> None:
    old = None
    if os.path.lexists(final):
        old = f"{tmp}.old"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_marker(venv: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(venv, MARKER)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(venv: str, data: dict[str, Any]) -> None:
    with open(os.path.join(venv, MARKER), "w") as fh:
        json.dump(data, fh)


@contextmanager
def _install_lock(base: str) -> Iterator[None]:
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".install.lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OpError("INSTALL_IN_PROGRESS", "another install is running on this node") from exc
        yield
