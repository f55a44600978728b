"""The model store on this node: `<install_path>/models/<provider>/<org>/<repo>[@rev]`.

Uploads land under `<install_path>/models/.partial/<same relative path>` and are
renamed into place only after every file was checked by size and SHA-256 here,
on the node, so a folder under the store root is always a complete model. A
file cut short stays in the partial folder and the next transfer appends to it;
one that fails its hash is deleted, so no run resumes from bad bytes. Each
relative path is checked twice: by pattern, and after resolving symlinks it
must still lie under the store root (a symlink planted in the store cannot
point a write or a delete elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Any

from rbee_hive.errors import OpError

PARTIAL = ".partial"
# Each segment starts with a letter or digit: no "..", no hidden names.
_REL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._@-]{0,127}){1,3}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,2}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
# What `model_size` reads of config.json: the KV cache's shape and the context.
CONFIG_INT_FIELDS = (
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_size",
    "max_position_embeddings",
)
CONFIG_MAX_BYTES = 1 << 20  # a config.json is a few KiB; anything larger is not one


def store_root(install_path: str) -> str:
    root = os.path.join(os.path.expanduser(install_path), "models")
    os.makedirs(root, exist_ok=True)
    return os.path.realpath(root)


def _under(root: str, *parts: str) -> str:
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root:
        raise OpError("INVALID_REQUEST", "path leaves the model store")
    return path


def resolve(install_path: str, rel: str, partial: bool = False) -> tuple[str, str]:
    """(store root, absolute folder) for a relative model path, checked."""
    if not isinstance(rel, str) or not _REL.match(rel) or ".." in rel:
        raise OpError("INVALID_REQUEST", "invalid model path")
    root = store_root(install_path)
    return root, _under(root, PARTIAL, rel) if partial else _under(root, rel)


def check_file_name(name: object) -> str:
    """A file name inside a model folder: flat or at most two folders deep, no `..`."""
    if not isinstance(name, str) or not _FILE.match(name) or ".." in name:
        raise OpError("INVALID_REQUEST", f"invalid file name {name!r}")
    return name


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: str, hash_files: bool) -> list[dict[str, Any]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith(".") or os.path.islink(full):
                continue
            item: dict[str, Any] = {
                "name": os.path.relpath(full, folder),
                "size": os.path.getsize(full),
            }
            if hash_files:
                item["sha256"] = sha256_of(full)
            found.append(item)
    return found


def model_store(install_path: str) -> dict[str, Any]:
    root = store_root(install_path)
    disk = shutil.disk_usage(root)
    return {"root": root, "free_bytes": disk.free, "total_bytes": disk.total}


def model_scan(
    install_path: str, rel: str, partial: bool = False, hash_files: bool = False
) -> dict[str, Any]:
    """What is in a model folder (or its partial upload): names, sizes, hashes."""
    _, folder = resolve(install_path, rel, partial)
    if not os.path.isdir(folder):
        return {"path": folder, "exists": False, "files": []}
    return {"path": folder, "exists": True, "files": _files(folder, hash_files)}


def model_prepare(install_path: str, rel: str) -> dict[str, Any]:
    """Make the partial folder; report what an earlier, cut-off upload left in it."""
    _, folder = resolve(install_path, rel, partial=True)
    os.makedirs(folder, exist_ok=True)
    return {"path": folder, "files": _files(folder, hash_files=True)}


def model_commit(install_path: str, rel: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Check every expected file in the partial folder, then rename it into place."""
    _, partial = resolve(install_path, rel, partial=True)
    _, final = resolve(install_path, rel)
    for expected in files:
        name = check_file_name(expected.get("name"))
        path = _under(partial, name)
        if not os.path.isfile(path):
            raise OpError("DOWNLOAD_FAILED", f"{name} is missing from the upload")
        size = os.path.getsize(path)
        if size != expected.get("size"):
            wanted_size = expected.get("size")
            raise OpError("DOWNLOAD_FAILED", f"{name} has {size} bytes, expected {wanted_size}")
        if sha256_of(path) != expected.get("sha256"):
            os.unlink(path)  # the next run must not resume from bad bytes
            raise OpError("DOWNLOAD_FAILED", f"{name} does not match its SHA-256")
    wanted = {f["name"] for f in files}
    for item in _files(partial, hash_files=False):
        if item["name"] not in wanted:  # e.g. a file an older revision listed
            os.unlink(os.path.join(partial, item["name"]))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.rename(partial, final)
    return {"path": final, "size_bytes": sum(int(f["size"]) for f in files)}


def model_remove(install_path: str, rel: str) -> dict[str, Any]:
    removed = False
    for partial in (False, True):
        _, folder = resolve(install_path, rel, partial)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
            removed = removed or not partial
    return {"removed": removed}


def model_size(path: str) -> dict[str, Any]:
    """Bytes of weight files in a model folder (any folder: `file:` models live
    anywhere), and the few config.json fields the queen's VRAM estimate needs."""
    real = os.path.realpath(os.path.expanduser(path))
    if not os.path.isdir(real):
        raise OpError("MODEL_NOT_FOUND", f"no model folder at {real}")
    weights = total = 0
    for item in _files(real, hash_files=False):
        total += item["size"]
        if item["name"].endswith(WEIGHT_SUFFIXES):
            weights += item["size"]
    return {
        "path": real,
        "weights_bytes": weights,
        "total_bytes": total,
        "config": _size_fields(os.path.join(real, "config.json")),
    }


def _size_fields(path: str) -> dict[str, Any]:
    """The KV cache's shape and the context length from config.json; a field
    that is missing or not a positive integer is left out, and so is everything
    when the file is absent, too big to be a config, or not JSON."""
    try:
        if os.path.getsize(path) > CONFIG_MAX_BYTES:
            return {}
        with open(path, "rb") as fh:
            config = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(config, dict):
        return {}
    found: dict[str, Any] = {}
    for key in CONFIG_INT_FIELDS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[key] = value
    return found
