"""Holds the backend and what is known about its loading, read by the routes.

Loading runs in a background thread so the server answers /health (503) from the
first moment; a failure is kept so the owner can read why (500) before stopping us.
"""

from __future__ import annotations

import logging
import os
import pwd
import threading
from enum import StrEnum
from pathlib import Path

from rbee_worker.backends.base import Backend, LoadError, LoadProgress, is_vram_oom
from rbee_worker.errors import MODEL_LOAD_FAILED, VRAM_OOM, one_line

log = logging.getLogger(__name__)


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class BackendHolder:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.state = LoadState.LOADING
        self.progress = LoadProgress("starting")
        self.error: str | None = None
        # A load failure's code: BACKEND_UNAVAILABLE where the GPU stack is not usable.
        self.error_code = MODEL_LOAD_FAILED
        self.vram_bytes: int | None = None  # what a GPU backend holds once loaded

    def load(self) -> None:
        """Load the model in the calling thread; never raises."""
        log.info("loading model %s", self.backend.model_name)
        try:
            check_readable(getattr(self.backend, "model_dir", None))
            self.backend.load(self._on_progress)
        except Exception as exc:
            self.error = one_line(exc)
            code = VRAM_OOM if is_vram_oom(exc) else getattr(exc, "code", None)
            self.error_code = code if isinstance(code, str) else MODEL_LOAD_FAILED
            self.progress = LoadProgress("failed", 0, self.progress.layers_total)
            self.state = LoadState.FAILED
            log.error("model load failed (%s): %s", self.error_code, self.error, exc_info=True)
            return
        vram = getattr(self.backend, "vram_bytes", None)
        self.vram_bytes = vram if isinstance(vram, int) else None
        self.state = LoadState.READY
        log.info("model %s ready", self.backend.model_name)

    def start_loading(self) -> threading.Thread:
        # A daemon thread: a SIGTERM during loading must not wait for it.
        thread = threading.Thread(target=self.load, name="model-load", daemon=True)
        thread.start()
        return thread

    def _on_progress(self, progress: LoadProgress) -> None:
        self.progress = progress
        log.info(
            "load progress: %s (%d/%d layers)",
            progress.stage,
            progress.layers_loaded,
            progress.layers_total,
        )


def check_readable(model_dir: Path | None) -> None:
    """Fail with the real cause when this user cannot read a model file.

    safetensors reports an unreadable file as "No such file or directory", which
    sends the user looking for a file that is there; this check runs first.
    """
    if model_dir is None:
        return
    try:
        if not Path(model_dir).is_dir():
            return  # the backend says "not found" itself
        paths = [Path(model_dir), *sorted(Path(model_dir).rglob("*"))]
    except PermissionError as exc:
        paths = [Path(exc.filename or model_dir)]
    for path in paths:
        if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
            raise LoadError(f"permission denied for user {_user()}: cannot read {path}")


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
