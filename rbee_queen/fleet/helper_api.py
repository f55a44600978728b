"""The helper's ops as typed methods: one per op of `rbee_wire.helper_ops.OPS`,
named after it, taking exactly its parameters (keyword-only) and returning its
result TypedDict. An optional parameter left at None is not sent, so the helper
applies its own default; `timeout` is how long the queen waits for the answer.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from rbee_wire import helper_ops as wire
from rbee_wire.helper_ops import OPS

DEFAULT_TIMEOUT_S = 30.0


class Caller(Protocol):
    """`NodeSession.call` or `HiveClient.call`: one request, its result."""

    async def __call__(self, op: str, timeout: float = ..., **args: Any) -> Any: ...


class HelperApi:
    def __init__(self, call: Caller) -> None:
        self._call = call

    async def _op(self, op: str, timeout: float, **args: Any) -> Any:
        optional = OPS[op].optional
        sent = {k: v for k, v in args.items() if v is not None or k not in optional}
        return await self._call(op, timeout=timeout, **sent)

    # --- the node -------------------------------------------------------------------

    async def ping(self, *, timeout: float = DEFAULT_TIMEOUT_S) -> wire.PingResult:
        return cast(wire.PingResult, await self._op("ping", timeout))

    async def probe(
        self, *, install_path: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ProbeResult:
        answer = await self._op("probe", timeout, install_path=install_path)
        return cast(wire.ProbeResult, answer)

    async def path_info(
        self, *, path: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.PathInfoResult:
        return cast(wire.PathInfoResult, await self._op("path_info", timeout, path=path))

    # --- workers --------------------------------------------------------------------

    async def spawn_worker(
        self,
        *,
        worker_id: str,
        run_dir: str,
        argv: list[str],
        pythonpath: str,
        env: dict[str, str] | None = None,
        memory_limit_bytes: int | None = None,
        device: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.SpawnWorkerResult:
        answer = await self._op(
            "spawn_worker",
            timeout,
            worker_id=worker_id,
            run_dir=run_dir,
            argv=argv,
            pythonpath=pythonpath,
            env=env,
            memory_limit_bytes=memory_limit_bytes,
            device=device,
        )
        return cast(wire.SpawnWorkerResult, answer)

    async def worker_status(
        self, *, worker_id: str, run_dir: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.WorkerStatusResult:
        answer = await self._op("worker_status", timeout, worker_id=worker_id, run_dir=run_dir)
        return cast(wire.WorkerStatusResult, answer)

    async def stop_worker(
        self,
        *,
        worker_id: str,
        run_dir: str,
        grace_s: float | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.StopWorkerResult:
        answer = await self._op(
            "stop_worker", timeout, worker_id=worker_id, run_dir=run_dir, grace_s=grace_s
        )
        return cast(wire.StopWorkerResult, answer)

    async def list_workers(
        self, *, run_dir: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ListWorkersResult:
        return cast(
            wire.ListWorkersResult, await self._op("list_workers", timeout, run_dir=run_dir)
        )

    async def log_tail(
        self,
        *,
        worker_id: str,
        run_dir: str,
        lines: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.LogTailResult:
        answer = await self._op(
            "log_tail", timeout, worker_id=worker_id, run_dir=run_dir, lines=lines
        )
        return cast(wire.LogTailResult, answer)

    # --- the worker's venv ----------------------------------------------------------

    async def install_status(
        self, *, install_path: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.InstallStatusResult:
        answer = await self._op("install_status", timeout, install_path=install_path)
        return cast(wire.InstallStatusResult, answer)

    async def install_venv(
        self,
        *,
        install_path: str,
        wheel: str,
        key: str,
        python: str | None = None,
        system_site_packages: bool | None = None,
        no_deps: bool | None = None,
        extra: str | None = None,
        index_url: str | None = None,
        timeout_s: float | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.InstallVenvResult:
        answer = await self._op(
            "install_venv",
            timeout,
            install_path=install_path,
            wheel=wheel,
            key=key,
            python=python,
            system_site_packages=system_site_packages,
            no_deps=no_deps,
            extra=extra,
            index_url=index_url,
            timeout_s=timeout_s,
        )
        return cast(wire.InstallVenvResult, answer)

    # --- the model store ------------------------------------------------------------

    async def model_store(
        self, *, install_path: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ModelStoreResult:
        answer = await self._op("model_store", timeout, install_path=install_path)
        return cast(wire.ModelStoreResult, answer)

    async def model_scan(
        self,
        *,
        install_path: str,
        rel: str,
        partial: bool | None = None,
        hash_files: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.ModelScanResult:
        answer = await self._op(
            "model_scan",
            timeout,
            install_path=install_path,
            rel=rel,
            partial=partial,
            hash_files=hash_files,
        )
        return cast(wire.ModelScanResult, answer)

    async def model_prepare(
        self, *, install_path: str, rel: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ModelPrepareResult:
        answer = await self._op("model_prepare", timeout, install_path=install_path, rel=rel)
        return cast(wire.ModelPrepareResult, answer)

    async def model_commit(
        self,
        *,
        install_path: str,
        rel: str,
        files: list[wire.ExpectedFile],
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.ModelCommitResult:
        answer = await self._op(
            "model_commit", timeout, install_path=install_path, rel=rel, files=files
        )
        return cast(wire.ModelCommitResult, answer)

    async def model_remove(
        self, *, install_path: str, rel: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ModelRemoveResult:
        answer = await self._op("model_remove", timeout, install_path=install_path, rel=rel)
        return cast(wire.ModelRemoveResult, answer)

    async def model_size(
        self, *, path: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ModelSizeResult:
        return cast(wire.ModelSizeResult, await self._op("model_size", timeout, path=path))

    # --- downloads on the node ------------------------------------------------------

    async def model_fetch_start(
        self,
        *,
        install_path: str,
        rel: str,
        python: str,
        pythonpath: str,
        repo_id: str,
        commit: str,
        files: list[wire.HubFile],
        token: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.ModelFetchStartResult:
        answer = await self._op(
            "model_fetch_start",
            timeout,
            install_path=install_path,
            rel=rel,
            python=python,
            pythonpath=pythonpath,
            repo_id=repo_id,
            commit=commit,
            files=files,
            token=token,
            env=env,
        )
        return cast(wire.ModelFetchStartResult, answer)

    async def model_fetch_events(
        self,
        *,
        job: str,
        cursor: int | None = None,
        wait_s: float | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> wire.ModelFetchEventsResult:
        answer = await self._op(
            "model_fetch_events", timeout, job=job, cursor=cursor, wait_s=wait_s
        )
        return cast(wire.ModelFetchEventsResult, answer)

    async def model_fetch_cancel(
        self, *, job: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> wire.ModelFetchCancelResult:
        answer = await self._op("model_fetch_cancel", timeout, job=job)
        return cast(wire.ModelFetchCancelResult, answer)
