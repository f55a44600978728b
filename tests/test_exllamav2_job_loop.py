"""The loop that drives exllamav2's dynamic generator from one thread, against
a scripted stand-in for the generator (the real one needs a CUDA GPU)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rbee_worker.backends.base import GenerationResult, StopReason
from rbee_worker.backends.exllamav2_backend import ExLlamaV2Backend
from rbee_worker.backends.job_loop import JobLoop

# --- the loop that drives the generator -------------------------------------------------


def _piece(text: str) -> dict[str, Any]:
    return {"stage": "streaming", "eos": False, "text": text, "token_ids": _Ids(1)}


class _Ids:
    """The `token_ids` of a result: only its shape is read."""

    def __init__(self, n: int) -> None:
        self.shape = (1, n)


class ScriptedGenerator:
    """Stands in for ExLlamaV2DynamicGenerator, which cannot run without a CUDA
    GPU: each job follows a script of result dicts, one per iterate() while it is
    active, and the calls are recorded. It insists, like the real one, on being
    used from one thread only."""

    def __init__(self, scripts: dict[str, Iterator[dict[str, Any]]]) -> None:
        self.scripts = scripts
        self.active: list[Any] = []
        self.cancelled: list[str] = []
        self.passes = 0
        self.fail_next_pass = False
        self._thread: int | None = None

    def _one_thread(self) -> None:
        self._thread = self._thread or threading.get_ident()
        assert self._thread == threading.get_ident(), "used from two threads"

    def enqueue(self, job: Any) -> None:
        self._one_thread()
        if job.name == "too-long":
            raise AssertionError("Job requires 99 pages (only 8 available)")
        self.active.append(job)

    def iterate(self) -> list[dict[str, Any]]:
        self._one_thread()
        self.passes += 1
        if self.fail_next_pass:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        results = []
        for job in list(self.active):
            result = {**next(self.scripts[job.name]), "identifier": job.identifier}
            results.append(result)
            if result["eos"]:
                self.active.remove(job)
        time.sleep(0.002)  # a forward pass takes time
        return results

    def cancel(self, job: Any) -> None:
        self._one_thread()
        self.active.remove(job)
        self.cancelled.append(job.name)

    def num_remaining_jobs(self) -> int:
        return len(self.active)


def _backend_on(generator: ScriptedGenerator) -> tuple[ExLlamaV2Backend, JobLoop]:
    backend = ExLlamaV2Backend(Path("/m"), "cuda")
    loop = JobLoop(generator)
    backend._loop = loop
    return backend, loop


def _run(
    backend: ExLlamaV2Backend, name: str, cancel: threading.Event | None = None
) -> tuple[list[str], GenerationResult]:
    assert backend._loop is not None
    ticket = backend._loop.submit(lambda ident: SimpleNamespace(name=name, identifier=ident))
    stream = backend._stream(ticket, cancel or threading.Event(), prompt_tokens=3)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return pieces, stop.value


def test_results_reach_their_own_request_and_end_as_rbee_results() -> None:
    eos = {"eos": True, "stage": "streaming", "eos_reason": "stop_token", "new_tokens": 3}
    stop = {
        "eos": True,
        "stage": "streaming",
        "text": "c",
        "eos_reason": "stop_string",
        "eos_triggering_string": "!",
        "new_tokens": 4,
    }
    generator = ScriptedGenerator(
        {
            "a": iter([{"stage": "started", "eos": False}, _piece("He"), _piece("llo"), eos]),
            "b": iter([_piece("a"), _piece("b"), {**stop, "held": {"text": "!x"}}]),
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda name: _run(backend, name), ["a", "b"])
    finally:
        loop.stop()
    assert a == (["He", "llo"], GenerationResult(StopReason.EOS, 2, prompt_tokens=3))
    assert b == (
        ["a", "b", "c"],
        GenerationResult(StopReason.STOP_SEQUENCE, 4, prompt_tokens=3, stop_sequence="!"),
    )
    assert loop.active == 0 and generator.active == []


def test_cancel_takes_the_job_out_of_the_generator_while_another_runs_on() -> None:
    endless = (_piece("x") for _ in itertools.count())
    done = {"eos": True, "stage": "streaming", "eos_reason": "max_new_tokens", "new_tokens": 40}
    generator = ScriptedGenerator(
        {"long": endless, "short": iter([*(_piece("y") for _ in range(39)), done])}
    )
    backend, loop = _backend_on(generator)
    cancel = threading.Event()
    try:
        with ThreadPoolExecutor(2) as pool:
            short = pool.submit(_run, backend, "short")
            ticket = loop.submit(lambda ident: SimpleNamespace(name="long", identifier=ident))
            stream = backend._stream(ticket, cancel, prompt_tokens=3)
            assert [next(stream) for _ in range(5)] == ["x"] * 5
            cancel.set()  # the client went away
            with pytest.raises(StopIteration) as ended:
                while True:
                    next(stream)
            pieces, result = short.result(timeout=10)
    finally:
        loop.stop()
    cancelled = ended.value.value
    assert cancelled.stop_reason is StopReason.CANCELLED and cancelled.tokens_out >= 5
    assert generator.cancelled == ["long"] and ticket.cancelled
    assert (len(pieces), result.stop_reason, result.tokens_out) == (39, StopReason.MAX_TOKENS, 40)
    assert generator.active == [] and loop.active == 0


def test_a_job_the_generator_refuses_fails_alone() -> None:
    generator = ScriptedGenerator(
        {
            "ok": iter(
                [
                    _piece("a"),
                    {**_piece(""), "eos": True, "eos_reason": "max_new_tokens", "new_tokens": 2},
                ]
            )
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with pytest.raises(RuntimeError, match="requires 99 pages"):
            _run(backend, "too-long")
        pieces, result = _run(backend, "ok")
    finally:
        loop.stop()
    assert (pieces, result.stop_reason) == (["a"], StopReason.MAX_TOKENS)


def test_a_failed_pass_ends_every_job_with_the_error_and_the_loop_goes_on() -> None:
    generator = ScriptedGenerator(
        {
            "p": (_piece("p") for _ in itertools.count()),
            "q": (_piece("q") for _ in itertools.count()),
        }
    )
    backend, loop = _backend_on(generator)
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(_run, backend, name) for name in ("p", "q")]
            time.sleep(0.05)
            generator.fail_next_pass = True
            for run in runs:
                with pytest.raises(RuntimeError, match="illegal memory access"):
                    run.result(timeout=10)
        assert sorted(generator.cancelled) == ["p", "q"] and generator.active == []
        generator.fail_next_pass = False
        generator.scripts["r"] = iter(
            [
                {
                    "eos": True,
                    "stage": "streaming",
                    "eos_reason": "max_new_tokens",
                    "new_tokens": 1,
                    "text": "r",
                }
            ]
        )
        assert _run(backend, "r")[0] == ["r"]
    finally:
        loop.stop()
