"""Hugging Face downloads on the queen side, through `huggingface_hub`.

Only the files a backend loads are fetched; pickled `.bin` weights only when the
user allows them (unpickling runs code). The hub's answers become rbee errors
here: 404 is MODEL_NOT_FOUND, 401/403 HF_TOKEN_REQUIRED; nothing ever falls back
to another model. `HF_ENDPOINT` points `huggingface_hub` at a mirror. Every
call blocks, so callers run them in a thread. The files themselves come through
`rbee_worker.hubfetch`, the same resumable code a node runs when it downloads
for itself.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rbee_worker.hubfetch as hubfetch
from rbee_queen.errors import (
    DownloadFailed,
    DownloadTimeout,
    HubTokenRequired,
    InsufficientDisk,
    ModelNotFound,
    RbeeError,
)
from rbee_queen.models.node_models import HubRef

NEEDED = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
PICKLED = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int
    sha256: str | None  # known up front for LFS files; else computed after download
    blob_id: str | None = None  # git's id for files kept in git (no SHA-256 on the hub)


@dataclass(frozen=True)
class Listing:
    commit: str
    files: tuple[HubFile, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


def wanted(name: str, allow_bin: bool) -> bool:
    if "/" in name:  # the backend loads a flat folder
        return False
    patterns = NEEDED + (PICKLED if allow_bin else ())
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_files(ref: HubRef, token: str | None, allow_bin: bool) -> Listing:
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(
            ref.repo_id, revision=ref.revision, files_metadata=True, token=token or False
        )
    except Exception as exc:
        raise hub_error(exc, ref) from exc
    names = [s.rfilename for s in info.siblings or []]
    files = tuple(
        HubFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None, s.blob_id or None)
        for s in sorted(info.siblings or [], key=lambda s: s.rfilename)
        if wanted(s.rfilename, allow_bin)
    )
    if not any(f.name.endswith((".safetensors", ".bin")) for f in files):
        pickled = any(fnmatch.fnmatchcase(n, PICKLED[0]) for n in names)
        hint = " (it has only pickled .bin weights: allow them with --allow-bin)" if pickled else ""
        raise ModelNotFound(f"{ref.ref} has no weights rbee can load{hint}")
    if "config.json" not in {f.name for f in files}:
        raise ModelNotFound(f"{ref.ref} has no config.json")
    assert info.sha is not None
    return Listing(info.sha, files)


def fetch(
    ref: HubRef, listing: Listing, item: HubFile, token: str | None, cache: Path
) -> tuple[str, str]:
    """Download one file into the queen's cache, resuming from the bytes an
    earlier, cut-off run left there; return its path and its SHA-256, checked
    against the hub's size and hash."""
    dest = cache / ref.org / ref.repo / listing.commit / item.name
    try:
        digest = hubfetch.fetch_file(
            ref.repo_id,
            item.name,
            listing.commit,
            item.size,
            item.sha256,
            str(dest),
            token,
            blob_id=item.blob_id,
        )
    except hubfetch.Corrupt as exc:
        raise DownloadFailed(f"{item.name} from {ref.ref} failed its size or hash check") from exc
    except Exception as exc:
        raise hub_error(exc, ref) from exc
    return str(dest), digest


def hub_error(exc: BaseException, ref: HubRef) -> RbeeError:
    return hub_error_from(hubfetch.describe(exc), ref)


def hub_error_from(failure: dict[str, Any], ref: HubRef) -> RbeeError:
    """An rbee error from a failure as `hubfetch.describe` reports it (here or on a node)."""
    kinds = set(failure.get("kinds") or [])
    status = failure.get("status")
    stopped = stopped_error(kinds, failure.get("text") or "", ref)
    if stopped is not None:
        return stopped
    token_hint = (
        f"the hub refused {ref.ref} (HTTP {status}): it is gated or private; put a token "
        "that has access in a 0600 file and point RBEE_HF_TOKEN_FILE at it "
        "(default: $RBEE_HOME/hf-token)"
    )
    if "GatedRepoError" in kinds or status == 403:
        return HubTokenRequired(token_hint)
    if "RepositoryNotFoundError" in kinds:
        # The hub answers 401 for a private repo and a missing one alike.
        if status == 401:
            return HubTokenRequired(token_hint)
        return ModelNotFound(f"no model {ref.repo_id} on the hub")
    if "RevisionNotFoundError" in kinds:
        return ModelNotFound(f"no revision {ref.revision} of {ref.repo_id} on the hub")
    if status == 401:
        return HubTokenRequired(token_hint)
    if status == 404:
        return ModelNotFound(f"{ref.ref}: the hub has no such file")
    text = failure.get("text") or ""
    if "ImportError" in kinds:
        return DownloadFailed(f"download of {ref.ref} failed: huggingface_hub is missing: {text}")
    what = f"HTTP {status}" if "HfHubHTTPError" in kinds else (failure.get("kinds") or ["?"])[0]
    return DownloadFailed(f"download of {ref.ref} failed: {what}: {text}")


def stopped_error(kinds: set[str], text: str, ref: HubRef) -> RbeeError | None:
    """A download that stalled (no byte within the read timeout) or ran out of
    disk; either way the partial file stays where it is for the next run."""
    if kinds & {"ReadTimeout", "TimeoutException", "Timeout", "ReadTimeoutError"}:
        return DownloadTimeout(
            f"the download of {ref.ref} made no progress within the time limit "
            "(HF_HUB_DOWNLOAD_TIMEOUT); the partial file is kept: run it again to resume"
        )
    if "No space left on device" in text or "[Errno 28]" in text:
        return InsufficientDisk(
            f"the disk filled up while downloading {ref.ref}; what was fetched is kept: "
            "free space and run it again to resume"
        )
    return None
