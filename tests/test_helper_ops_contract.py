"""The helper's ops are defined once (rbee_wire.helper_ops) and both sides keep to it:
the helper dispatches exactly those ops with those parameters, the queen's
HelperApi has one method per op with the same parameters, no op name in the
queen's source is outside the contract, and a real helper's answers fit the
result TypedDicts."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
import json
import sys
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import rbee_hive
import rbee_queen
from rbee_hive import rpc
from rbee_queen.errors import HelperFailed
from rbee_queen.fleet.helper_api import DEFAULT_TIMEOUT_S, HelperApi
from rbee_queen.fleet.hive_client import HiveClient
from rbee_wire import helper_ops
from rbee_wire.helper_ops import OPS
from rbee_wire.typecheck import problems

REMOTE = Path(rbee_hive.__file__).parent.parent
QUEEN = Path(rbee_queen.__file__).parent


# --- both sides against the contract ---------------------------------------------


def test_the_helper_dispatches_every_op_of_the_contract_with_its_parameters() -> None:
    assert set(rpc.HANDLERS) == set(OPS)
    for name, spec in OPS.items():
        params = inspect.signature(rpc._handler(name)).parameters.values()
        assert {p.name for p in params} == spec.required | spec.optional, name
        required = {p.name for p in params if p.default is inspect.Parameter.empty}
        assert required == spec.required, name


def test_the_queens_api_has_one_method_per_op_with_the_same_parameters() -> None:
    public = {n for n, _ in inspect.getmembers(HelperApi, inspect.iscoroutinefunction)}
    assert {n for n in public if not n.startswith("_")} == set(OPS)
    for name, spec in OPS.items():
        method = getattr(HelperApi, name)
        params = list(inspect.signature(method).parameters.values())[1:]  # after self
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
        by_name = {p.name: p for p in params}
        assert by_name.pop("timeout").default == DEFAULT_TIMEOUT_S == 30.0
        assert set(by_name) == spec.required | spec.optional, name
        for param in by_name.values():
            # Required: no default. Optional: None, which leaves the helper's default.
            default = inspect.Parameter.empty if param.name in spec.required else None
            assert param.default is default, (name, param.name)
        assert typing.get_type_hints(method)["return"] is spec.result, name


def _ops_named(tree: ast.AST) -> list[tuple[int, str]]:
    """Every op a module names: `<x>.call("op", ...)` and `<x>.ops.op(...)`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            first = node.args[0] if node.args else None
            if node.func.attr == "call" and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "ops":
                found.append((node.lineno, node.attr))
    return found


def test_every_op_the_queen_names_is_in_the_contract() -> None:
    named = []
    for path in sorted(QUEEN.rglob("*.py")):
        for line, op in _ops_named(ast.parse(path.read_text(), str(path))):
            named.append((f"{path.relative_to(QUEEN.parent)}:{line}", op))
    assert len(named) > 10  # the scan sees the call sites
    assert [(where, op) for where, op in named if op not in OPS] == []


def test_a_misspelt_op_is_caught_by_the_scan() -> None:
    tree = ast.parse("async def f(s):\n    await s.call('worker_stats')\n    await s.ops.prob()\n")
    assert [op for _, op in _ops_named(tree) if op not in OPS] == ["worker_stats", "prob"]


def test_the_helper_refuses_arguments_outside_the_contract() -> None:
    stray = rpc.handle({"id": 1, "op": "path_info", "args": {"path": "/", "depth": 2}})
    assert stray["error"] == {
        "code": "INVALID_REQUEST",
        "message": "path_info: unexpected argument(s) depth",
    }
    missing = rpc.handle({"id": 2, "op": "log_tail", "args": {"worker_id": "w"}})
    assert missing["error"]["message"] == "log_tail: missing argument(s) run_dir"


def test_a_request_line_is_one_json_object() -> None:
    line = helper_ops.request_line(7, "probe", {"install_path": "/tmp/ü"})
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"id": 7, "op": "probe", "args": {"install_path": "/tmp/ü"}}


# --- a real helper, through the queen's client -------------------------------------


class _TextLines:
    """asyncio's byte streams as the text lines HiveClient reads and writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def readline(self) -> str:
        return (await self._reader.readline()).decode()

    def write(self, data: str) -> None:
        self._writer.write(data.encode())


@pytest.fixture
async def helper() -> AsyncIterator[HelperApi]:
    """`python -S -E -m rbee_hive` as the node runs it, beside rbee_wire."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-S", "-E", "-u", "-m", "rbee_hive"),
        cwd=REMOTE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = _TextLines(proc.stdout, proc.stdin)
    client = HiveClient("loopback", lines, lines)
    try:
        yield HelperApi(client.call)
    finally:
        await client.aclose()
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


def fits(result: Any, op: str) -> None:
    assert problems(result, OPS[op].result) == [], (op, result)


async def test_a_real_helper_answers_as_the_contract_says(
    helper: HelperApi, tmp_path: Path
) -> None:
    install = str(tmp_path / "install")
    fits(await helper.ping(), "ping")
    fits(await helper.probe(install_path=install), "probe")
    fits(await helper.probe(), "probe")  # the helper's default install path
    fits(await helper.path_info(path=str(tmp_path)), "path_info")
    fits(await helper.install_status(install_path=install), "install_status")
    fits(await helper.model_store(install_path=install), "model_store")
    fits(await helper.model_fetch_cancel(job="0123456789abcdef"), "model_fetch_cancel")
    with pytest.raises(HelperFailed) as refused:
        await helper.model_fetch_events(job="0123456789abcdef", wait_s=0.0)
    assert refused.value.details["helper_code"] == "INVALID_REQUEST"


async def test_a_real_helpers_worker_ops(helper: HelperApi, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    code = "import time; print('up', flush=True); time.sleep(60)"
    spawned = await helper.spawn_worker(
        worker_id="w-1", run_dir=run_dir, argv=[sys.executable, "-c", code], pythonpath=""
    )
    fits(spawned, "spawn_worker")
    for _ in range(200):  # until the worker printed, at most 10 s
        tail = await helper.log_tail(worker_id="w-1", run_dir=run_dir, lines=5)
        if tail["lines"]:
            break
        await asyncio.sleep(0.05)
    fits(tail, "log_tail")
    assert tail["lines"] == ["up"]
    status = await helper.worker_status(worker_id="w-1", run_dir=run_dir)
    fits(status, "worker_status")
    assert status["alive"] and status["pid"] == spawned["pid"]
    listed = await helper.list_workers(run_dir=run_dir)
    fits(listed, "list_workers")
    stopped = await helper.stop_worker(worker_id="w-1", run_dir=run_dir, grace_s=5.0)
    fits(stopped, "stop_worker")
    assert stopped["was_running"] and stopped["stopped"]
    fits(await helper.worker_status(worker_id="w-1", run_dir=run_dir), "worker_status")


async def test_a_real_helpers_model_store_ops(helper: HelperApi, tmp_path: Path) -> None:
    install, rel = str(tmp_path / "install"), "hf/org/tiny"
    prepared = await helper.model_prepare(install_path=install, rel=rel)
    fits(prepared, "model_prepare")
    content = json.dumps({"num_hidden_layers": 2, "hidden_size": 64}).encode()
    Path(prepared["path"], "config.json").write_bytes(content)
    partial = await helper.model_scan(install_path=install, rel=rel, partial=True, hash_files=True)
    fits(partial, "model_scan")
    sha = hashlib.sha256(content).hexdigest()
    assert partial["files"] == [{"name": "config.json", "size": len(content), "sha256": sha}]
    expected: helper_ops.ExpectedFile = {"name": "config.json", "size": len(content), "sha256": sha}
    committed = await helper.model_commit(install_path=install, rel=rel, files=[expected])
    fits(committed, "model_commit")
    fits(await helper.model_scan(install_path=install, rel=rel), "model_scan")
    sized = await helper.model_size(path=committed["path"])
    fits(sized, "model_size")
    assert sized["config"] == {"num_hidden_layers": 2, "hidden_size": 64}
    fits(await helper.model_remove(install_path=install, rel=rel), "model_remove")
