"""The worker's parts in-process: tiny model writer, detokenizer, request checks,
the torch backend's generation loop, and the app's failure paths."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_worker.app import create_app
from rbee_worker.backends.base import (
    GenerationParams,
    GenerationResult,
    LoadError,
    LoadProgress,
    StopReason,
)
from rbee_worker.backends.torch_backend import TorchBackend, parse_device
from rbee_worker.detokenize import REPLACEMENT, IncrementalDecoder
from rbee_worker.loading import BackendHolder, LoadState
from rbee_worker.params import InvalidRequest, parse_inference
from rbee_worker.tinymodel import main as tinymodel_main
from rbee_worker.tinymodel import write_tiny_model


def run(
    backend: Any, prompt: str, cancel: threading.Event | None = None, **params: Any
) -> tuple[list[str], GenerationResult]:
    generation = backend.generate(prompt, GenerationParams(**params), cancel or threading.Event())
    pieces: list[str] = []
    while True:
        try:
            pieces.append(next(generation))
        except StopIteration as stop:
            return pieces, stop.value


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TorchBackend:
    loaded = TorchBackend(tiny_model_dir, "cpu")
    loaded.load(lambda progress: None)
    return loaded


@pytest.fixture(scope="module")
def greedy_ids(tiny_model_dir: Path) -> list[int]:
    """32 greedy token ids for 'Hello world' from transformers' own generate()."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True).eval()
    prompt = torch.tensor([tokenizer("Hello world")["input_ids"]])
    with torch.inference_mode():
        out = model.generate(
            prompt, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return [int(t) for t in out[0, prompt.shape[1] :]]


# --- the tiny model ----------------------------------------------------------------


def test_tiny_model_is_deterministic_small_and_complete(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a", seed=0)
    again = write_tiny_model(tmp_path / "b", seed=0)
    other = write_tiny_model(tmp_path / "c", seed=1)
    weights = (first / "model.safetensors").read_bytes()
    assert weights == (again / "model.safetensors").read_bytes()
    assert weights != (other / "model.safetensors").read_bytes()
    names = {p.name for p in first.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    }
    assert sum(p.stat().st_size for p in first.iterdir()) < 1_000_000
    config = json.loads((first / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    tokenizer_config = json.loads((first / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<s>", "</s>")


def test_tiny_model_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tinymodel_main([str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "model.safetensors").stat().st_size > 100_000


# --- incremental detokenization ------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))


def test_pieces_rebuild_the_text_and_never_split_a_character(tokenizer: Any) -> None:
    text = "Hé said: naïve bees ✓ 日本 🐝 done"
    ids = tokenizer.encode(text).ids
    decoder = IncrementalDecoder(tokenizer.decode)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any(REPLACEMENT in p for p in pieces)
    # Multi-byte characters span several byte tokens here, so some pushes held back.
    assert len([p for p in pieces if p]) < len(ids)


def test_an_incomplete_character_is_held_and_dropped_at_flush(tokenizer: Any) -> None:
    ids = tokenizer.encode("ok 🐝").ids
    decoder = IncrementalDecoder(tokenizer.decode)
    pieces = [decoder.push(i) for i in ids[:-1]]  # the bee's last byte never comes
    assert "".join(pieces) == "ok "
    assert decoder.flush() == ""


# --- request checks ----------------------------------------------------------------


def test_defaults_and_accepted_values() -> None:
    request = parse_inference({"job_id": "a-B_9", "prompt": "hi", "ignored": [1]})
    assert request.params == GenerationParams(max_tokens=20, temperature=1.0, seed=None)
    request = parse_inference(
        {"job_id": "x" * 256, "prompt": "p", "max_tokens": 2048, "temperature": 0, "seed": 0}
    )
    assert (request.params.max_tokens, request.params.temperature, request.params.seed) == (
        2048,
        0.0,
        0,
    )


@pytest.mark.parametrize(
    ("body", "field", "constraint"),
    [
        ({"job_id": "x" * 257}, "job_id", "pattern"),
        ({"job_id": 5}, "job_id", "type"),
        ({"prompt": ["hi"]}, "prompt", "type"),
        ({"max_tokens": 2049}, "max_tokens", "range"),
        ({"max_tokens": 1.5}, "max_tokens", "type"),
        ({"temperature": float("nan")}, "temperature", "type"),
        ({"temperature": True}, "temperature", "type"),
        ({"seed": 2**64}, "seed", "range"),
        ({"seed": "1"}, "seed", "type"),
    ],
)
def test_each_bad_value_is_named(body: dict[str, Any], field: str, constraint: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_inference({"job_id": "ok", "prompt": "ok", **body})
    assert [(f.field, f.constraint) for f in caught.value.fields] == [(field, constraint)]


# --- the torch backend ---------------------------------------------------------------


def test_greedy_loop_matches_transformers_generate(
    backend: TorchBackend, tokenizer: Any, greedy_ids: list[int]
) -> None:
    pieces, result = run(backend, "Hello world", max_tokens=32, temperature=0)
    prompt_tokens = len(tokenizer.encode("Hello world").ids)
    assert result == GenerationResult(StopReason.MAX_TOKENS, 32, prompt_tokens)
    # The random model spells stray bytes; the stream drops what never forms a character.
    assert "".join(pieces) == tokenizer.decode(greedy_ids).replace(REPLACEMENT, "")


def test_stops_at_an_eos_id_from_generation_config(
    tiny_model_dir: Path, tmp_path: Path, tokenizer: Any, greedy_ids: list[int]
) -> None:
    # Declare the k-th greedy token an EOS: the loop must stop there, reading the
    # model's generation_config.json like any real model's.
    k = next(k for k in range(3, 32) if greedy_ids[k] not in greedy_ids[:k])
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "eos-model"))
    config = json.loads((model_dir / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], greedy_ids[k]]
    (model_dir / "generation_config.json").write_text(json.dumps(config))
    eos_backend = TorchBackend(model_dir, "cpu")
    eos_backend.load(lambda progress: None)

    pieces, result = run(eos_backend, "Hello world", max_tokens=32, temperature=0)
    assert (result.stop_reason, result.tokens_out) == (StopReason.EOS, k)
    assert "".join(pieces) == tokenizer.decode(greedy_ids[:k])


def test_cancel_stops_between_tokens(backend: TorchBackend) -> None:
    cancel = threading.Event()
    cancel.set()
    result = run(backend, "Hi", cancel, max_tokens=10)[1]
    assert (result.stop_reason, result.tokens_out) == (StopReason.CANCELLED, 0)

    cancel = threading.Event()
    generation = backend.generate("Hi", GenerationParams(2048, 0.0), cancel)
    next(generation)
    cancel.set()
    with pytest.raises(StopIteration) as stop:
        while True:
            next(generation)
    assert stop.value.value.stop_reason is StopReason.CANCELLED
    assert stop.value.value.tokens_out < 2048


def test_a_prompt_beyond_the_context_fails_clearly(backend: TorchBackend) -> None:
    with pytest.raises(ValueError, match="exceeds the model's context of 4096 tokens"):
        run(backend, "bee " * 2100, max_tokens=2048)


def test_seeded_sampling_repeats_and_unseeded_varies(backend: TorchBackend) -> None:
    first = run(backend, "Hello", max_tokens=24, temperature=1.0, seed=11)
    assert run(backend, "Hello", max_tokens=24, temperature=1.0, seed=11) == first
    unseeded = {"".join(run(backend, "Hello", max_tokens=24, temperature=1.0)[0]) for _ in "abc"}
    assert len(unseeded) > 1


def test_load_reports_progress_stages(tiny_model_dir: Path) -> None:
    seen: list[LoadProgress] = []
    TorchBackend(tiny_model_dir).load(seen.append)
    assert [p.stage for p in seen][0] == "starting"
    assert seen[-1] == LoadProgress("ready", 2, 2)


def test_device_names() -> None:
    assert parse_device("cpu") == "cpu"
    assert parse_device("1") == "cuda:1"
    assert parse_device("cuda:0") == "cuda:0"
    with pytest.raises(LoadError):
        parse_device("tpu")


def test_cuda_without_a_gpu_fails_instead_of_falling_back(tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(LoadError, match="no CUDA GPU"):
        TorchBackend(tiny_model_dir, "cuda").load(lambda progress: None)


# --- the app's failure paths ------------------------------------------------------------


async def test_a_failed_load_is_reported_and_refuses_work(tmp_path: Path) -> None:
    holder = BackendHolder(TorchBackend(tmp_path / "missing", "cpu"))
    holder.load()
    assert holder.state is LoadState.FAILED
    transport = httpx.ASGITransport(app=create_app(holder))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        health = await client.get("/health")
        assert health.status_code == 500
        body = health.json()
        assert (body["status"], body["code"]) == ("error", "MODEL_LOAD_FAILED")
        assert "model directory not found" in body["message"] and "\n" not in body["message"]
        ready = (await client.get("/v1/ready")).json()
        assert (ready["ready"], ready["state"]) == (False, "error")
        refused = await client.post("/v1/inference", json={"job_id": "j", "prompt": "p"})
        assert refused.status_code == 500
        assert refused.json()["error"]["code"] == "MODEL_LOAD_FAILED"


class BreaksMidway:
    """Fails after one piece, as a backend might on a device error mid-generation."""

    model_name = "breaks"

    def load(self, progress: Any) -> None:
        progress(LoadProgress("ready", 1, 1))

    def generate(self, prompt: str, params: GenerationParams, cancel: Any) -> Iterator[str]:
        yield "partial"
        raise RuntimeError("device lost\nwith detail")


async def test_a_failure_mid_stream_ends_with_an_error_event_and_frees_the_slot() -> None:
    holder = BackendHolder(BreaksMidway())
    holder.load()
    app = create_app(holder)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.post("/v1/inference", json={"job_id": "j1", "prompt": "p"})
    lines = [line for line in response.text.split("\n") if line]
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert [e["type"] for e in events] == ["started", "token", "error"]
    assert events[2] == {
        "type": "error",
        "code": "INFERENCE_FAILED",
        "message": "device lost with detail",
    }
    assert lines[-1] == "data: [DONE]"
    assert app.state.slots.busy == 0
