"""The project's own wheel, built on the queen's machine for `setup install`.

The wheel is built from a copy of the source tree (so the tree gains no
`build/` folder) and cached under `RBEE_HOME/wheels/<hash>/`, where the hash
covers every file that goes into it: an unchanged tree is never rebuilt, and
a node that has this hash installed needs nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import rbee_queen
from rbee_queen.errors import InstallFailed

# What the wheel is built from, relative to the source root.
SOURCES = ("pyproject.toml", "README.md", "rbee_keeper", "rbee_queen", "remote")
BUILD_TIMEOUT_S = 300.0
# A wheel file to install instead of building one: for a queen installed without
# its source tree, or to pin one build while the tree changes.
WHEEL_ENV = "RBEE_WHEEL"


@dataclass(frozen=True)
class Wheel:
    path: Path
    digest: str

    @property
    def filename(self) -> str:
        return self.path.name


def source_root() -> Path:
    root = Path(rbee_queen.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or not (root / "remote").is_dir():
        raise InstallFailed(
            f"no rbee source tree next to {root / 'rbee_queen'}: `setup install` builds the"
            " wheel from a source checkout (pip install -e .)"
        )
    return root


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ]
    return files


def source_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def build_wheel(home: Path) -> Wheel:
    """The cached wheel for the current source tree, built first if missing (blocking)."""
    pinned = os.environ.get(WHEEL_ENV)
    if pinned:
        path = Path(pinned).expanduser()
        if not path.is_file() or path.suffix != ".whl":
            raise InstallFailed(f"{WHEEL_ENV}={pinned} is not a wheel file")
        return Wheel(path, hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    root = source_root()
    digest = source_digest(root)
    cache = home / "wheels" / digest
    built = sorted(cache.glob("*.whl")) if cache.is_dir() else []
    if built:
        return Wheel(built[0], digest)
    with tempfile.TemporaryDirectory(prefix="rbee-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        for path in _source_files(root):
            dest = src / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out)]
        # With setuptools at hand, build offline; else pip fetches it for an isolated build.
        if importlib.util.find_spec("setuptools") is not None:
            argv.append("--no-build-isolation")
        try:
            done = subprocess.run(
                [*argv, str(src)],
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InstallFailed(f"building the rbee wheel took over {BUILD_TIMEOUT_S:g}s") from exc
        wheels = sorted(out.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()] or ["no wheel produced"]
            raise InstallFailed(f"building the rbee wheel failed: {lines[-1].strip()[:300]}")
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / (wheels[0].name + ".part")
        shutil.copy2(wheels[0], part)
        final = part.with_name(wheels[0].name)
        part.replace(final)  # a half-copied wheel is never found by the glob above
    return Wheel(final, digest)
