"""The VRAM a CUDA worker needs: estimated from the model's files and config.json,
then corrected by what a loaded worker of that model reported on that GPU model.
No GPU here: nvidia-smi answers in its CSV format (written by hand) stand in for
the cards, and recorded worker rows (in a real SQLite database) for the loads
that happened on them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peewee import SqliteDatabase

from rbee_hive.gpus import parse_nvidia_smi
from rbee_hive.models import model_size
from rbee_queen.errors import InsufficientVram
from rbee_queen.fleet.helper_api import HelperApi
from rbee_queen.store.db import open_database
from rbee_queen.store.tables import Node, Worker
from rbee_queen.workers.resources import (
    VRAM_OVERHEAD,
    Placement,
    check_fits,
    kv_cache_bytes,
    memory_limit,
    preflight_worker,
    recorded_vram,
    vram_need,
)
from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node, stream_task, workers

RECORDED = Path(__file__).parent / "data" / "nvidia-smi"
GIB = 1024**3
MIB = 1024**2
RTX3090 = "NVIDIA GeForce RTX 3090"
# Llama 3 8B's shape: 8 KV heads of 128, 32 layers, 8192 tokens -> 1 GiB of fp16 cache.
LLAMA3_8B = {
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "hidden_size": 4096,
    "max_position_embeddings": 8192,
}


def probe_of(recording: str) -> dict[str, Any]:
    return {"gpus": parse_nvidia_smi((RECORDED / recording).read_text())}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    database = open_database(tmp_path / "queen.db")
    for name in ("n1", "n2"):
        Node.create(name=name, ssh_host="h", ssh_user="u", ssh_key_path="", install_path="/i")
    yield database
    database.close()


def loaded(worker_id: str, node: str, model: str, gpu: str | None, vram: int | None) -> None:
    device = "cuda:1" if gpu else "cpu"
    Worker.create(
        worker_id=worker_id,
        node=node,
        model_ref=model,
        device=device,
        gpu_name=gpu,
        vram_bytes=vram,
        state="stopped",
    )


# --- what the helper reads -------------------------------------------------------------


def test_model_size_reads_the_cache_shape_from_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    sized = model_size(str(tiny_model_dir))
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert sized["config"] == {
        key: config[key]
        for key in (
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "hidden_size",
            "max_position_embeddings",
        )
    }
    assert sized["weights_bytes"] == (tiny_model_dir / "model.safetensors").stat().st_size

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "model.safetensors").write_bytes(b"x" * 10)
    (odd / "config.json").write_text(
        '{"num_hidden_layers": "32", "head_dim": true, "hidden_size": 8}'
    )
    assert model_size(str(odd))["config"] == {"hidden_size": 8}  # only real positive integers
    (odd / "config.json").write_text("{not json")
    assert model_size(str(odd)) == {
        "path": str(odd.resolve()),
        "weights_bytes": 10,
        "total_bytes": 19,
        "config": {},
    }
    (odd / "config.json").unlink()
    assert model_size(str(odd))["config"] == {}


# --- the estimate ----------------------------------------------------------------------


def test_kv_cache_follows_the_config() -> None:
    assert kv_cache_bytes(LLAMA3_8B, 1) == GIB
    assert kv_cache_bytes(LLAMA3_8B, 4) == 4 * GIB  # one full-length sequence per slot
    assert kv_cache_bytes({**LLAMA3_8B, "head_dim": 64}, 1) == GIB // 2
    # Without num_key_value_heads every attention head has its own keys and values.
    assert kv_cache_bytes({**LLAMA3_8B, "num_key_value_heads": None}, 1) == 4 * GIB
    # The worker sizes its cache in 256-token pages; no context in the config is 2048.
    assert kv_cache_bytes({**LLAMA3_8B, "max_position_embeddings": 8000}, 1) == GIB
    assert kv_cache_bytes({**LLAMA3_8B, "max_position_embeddings": None}, 1) == GIB // 4
    assert kv_cache_bytes({"hidden_size": 4096}, 1) == 0  # not enough to tell
    # A long-context model (Llama 3.1: 131072) is counted for 8192 tokens a slot:
    # the worker fits its cache to the VRAM left, so the full context would
    # refuse cards it runs on.
    assert kv_cache_bytes({**LLAMA3_8B, "max_position_embeddings": 131072}, 1) == GIB


def test_the_estimate_is_checked_against_the_recorded_free_memory() -> None:
    probe = probe_of("2x-rtx3090.csv")
    free1 = (24576 - 18432) * MIB  # 6 GiB free on cuda:1
    sized = {"weights_bytes": 4 * GIB, "config": LLAMA3_8B}
    need = vram_need(sized, slots=1)
    assert need.required_bytes == 4 * GIB + GIB + VRAM_OVERHEAD and not need.measured
    with pytest.raises(InsufficientVram) as refused:
        check_fits(4 * GIB, probe, "cuda:1", "n1", need)
    assert refused.value.details == {
        "required_bytes": 4 * GIB + GIB + VRAM_OVERHEAD,
        "available_bytes": free1,
        "node": "n1",
        "device": "cuda:1",
    }
    assert "(estimated)" in refused.value.message and "\n" not in refused.value.message
    check_fits(4 * GIB, probe, "cuda:0", "n1", need)  # 23 GiB free there
    # A cache per slot: 20 slots of 8192 tokens (20 GiB) and the weights overflow 23 GiB.
    with pytest.raises(InsufficientVram):
        check_fits(4 * GIB, probe, "cuda:0", "n1", vram_need(sized, slots=20))


# --- corrected after the first load ----------------------------------------------------


def test_the_largest_recorded_load_on_the_same_gpu_model_replaces_the_estimate(
    db: SqliteDatabase,
) -> None:
    model = "file:/models/llama3-8b"
    loaded("w-1", "n1", model, RTX3090, int(4.00 * GIB))
    loaded("w-2", "n1", model, RTX3090, int(4.25 * GIB))  # the largest: it counts
    loaded("w-3", "n1", model, "NVIDIA GeForce RTX 4090", 9 * GIB)  # another GPU model
    loaded("w-4", "n2", model, RTX3090, 9 * GIB)  # another node
    loaded("w-5", "n1", "file:/models/other", RTX3090, 9 * GIB)  # another model
    loaded("w-6", "n1", model, RTX3090, None)  # started but never reported
    loaded("w-7", "n1", model, None, None)  # a CPU worker of the same model
    assert recorded_vram("n1", model, RTX3090) == int(4.25 * GIB)
    assert recorded_vram("n1", model, "NVIDIA H100 80GB HBM3") is None

    probe = probe_of("2x-rtx3090.csv")  # 6 GiB free on cuda:1
    sized = {"weights_bytes": 4 * GIB, "config": LLAMA3_8B}
    with pytest.raises(InsufficientVram):  # the estimate alone: 6.5 GiB
        check_fits(4 * GIB, probe, "cuda:1", "n1", vram_need(sized, 1))
    measured = vram_need(sized, 1, recorded_vram("n1", model, RTX3090))
    assert measured.measured and measured.required_bytes == int(4.25 * GIB) + VRAM_OVERHEAD
    check_fits(4 * GIB, probe, "cuda:1", "n1", measured)  # 5.75 GiB: it fits

    # A load that took more than estimated refuses what the estimate would allow.
    loaded("w-8", "n1", model, RTX3090, int(5.5 * GIB))
    with pytest.raises(InsufficientVram) as refused:
        check_fits(
            GIB, probe, "cuda:1", "n1", vram_need(sized, 1, recorded_vram("n1", model, RTX3090))
        )
    assert refused.value.details["required_bytes"] == int(5.5 * GIB) + VRAM_OVERHEAD
    assert "as measured at an earlier load" in refused.value.message


class RecordedNode:
    """A node session whose probe answers with an nvidia-smi answer from tests/data (no GPU
    here); `model_size` runs the helper's own function on a real folder."""

    install_dir = "/unused"

    def __init__(self, recording: str) -> None:
        self.probe = {"ram_available_bytes": 64 * GIB, **probe_of(recording)}
        self.ops = HelperApi(self.call)  # the typed calls, as a real session has them

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        if op == "model_size":
            return model_size(args["path"])
        assert op == "probe", op
        return self.probe


async def test_preflight_picks_the_gpu_and_uses_the_recorded_load(
    db: SqliteDatabase, tiny_model_dir: Path
) -> None:
    session: Any = RecordedNode("mixed-4090-3060.csv")  # the 3060 has more free memory
    model = f"file:{tiny_model_dir}"
    placement = await preflight_worker(session, "n1", str(tiny_model_dir), "cuda", model_ref=model)
    weights = sum(f.stat().st_size for f in tiny_model_dir.iterdir() if f.suffix == ".safetensors")
    # The worker's RAM bound is the default: weights x 1.2 and the CUDA runtime's own.
    expected_bound = memory_limit(weights, "cuda:1")
    assert placement == Placement("cuda:1", "NVIDIA GeForce RTX 3060", expected_bound)
    assert expected_bound > 4 * GIB
    # The tiny model fits by its estimate; a recorded load bigger than the card refuses it.
    loaded("w-1", "n1", model, "NVIDIA GeForce RTX 3060", 12 * GIB)
    with pytest.raises(InsufficientVram) as refused:
        await preflight_worker(session, "n1", str(tiny_model_dir), "cuda:1", model_ref=model)
    assert refused.value.details["required_bytes"] == 12 * GIB + VRAM_OVERHEAD
    assert refused.value.details["available_bytes"] == (12288 - 305) * MIB
    cpu = await preflight_worker(session, "n1", str(tiny_model_dir), "cpu", model_ref=model)
    assert cpu == Placement("cpu", None, memory_limit(weights, "cpu"))


def test_m007_adds_the_columns_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    database = open_database(path)
    Node.create(name="n1", ssh_host="h", ssh_user="u", ssh_key_path="", install_path="/i")
    Worker.create(worker_id="w-1", node="n1", model_ref="file:/m", state="stopped")
    database.close()
    with sqlite3.connect(path) as old:  # back to the database as it was before m007
        old.execute("ALTER TABLE workers DROP COLUMN vram_bytes")
        old.execute("ALTER TABLE workers DROP COLUMN gpu_name")
        old.execute("DELETE FROM _migrations WHERE name = 'm007_worker_vram'")
    database = open_database(path)
    try:
        rows = database.execute_sql("SELECT worker_id, vram_bytes, gpu_name FROM workers")
        assert rows.fetchall() == [("w-1", None, None)]
        Worker.update(vram_bytes=GIB, gpu_name=RTX3090).execute()
        assert recorded_vram("n1", "file:/m", RTX3090) == GIB
    finally:
        database.close()


# --- a real worker ---------------------------------------------------------------------


def test_a_cpu_worker_records_no_vram(
    queen: QueenProcess, sshd: SshServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    add_node(queen, sshd, tmp_path)
    task = {"node": "n1", "model": f"file:{tiny_model_dir}", "prompt": "hi", "max_tokens": 2}
    events, _ = stream_task(queen, **task)
    assert events[-2]["type"] == "end", events
    (worker,) = workers(queen)
    assert worker["device"] == "cpu" and worker["state"] == "idle"
    assert "vram_bytes" in worker and worker["vram_bytes"] is None
    with queen.client() as c:
        r = c.post("/v2/workers/shutdown", json={"worker_id": worker["worker_id"]})
    assert r.status_code == 200, r.text
