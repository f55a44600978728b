"""Sampling parameters, stop sequences and chat templates, each checked for its effect
on the real torch backend and the tiny model."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from rbee_worker.backends.base import (
    ChatTemplateMissing,
    GenerationParams,
    GenerationResult,
    StopReason,
)
from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.params import InvalidRequest, parse_inference
from rbee_worker.stops import StopMatcher

PROMPT = "The queen rules the hive"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def run(backend: TorchBackend, prompt: str = PROMPT, **params: Any) -> tuple[str, GenerationResult]:
    generation = backend.generate(prompt, GenerationParams(**params), threading.Event())
    pieces: list[str] = []
    while True:
        try:
            pieces.append(next(generation))
        except StopIteration as stop:
            return "".join(pieces), stop.value


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TorchBackend:
    loaded = TorchBackend(tiny_model_dir, "cpu")
    loaded.load(lambda progress: None)
    return loaded


@pytest.fixture(scope="module")
def greedy(backend: TorchBackend) -> str:
    return run(backend, max_tokens=40, temperature=0)[0]


# --- the filters, each against greedy decoding -------------------------------------


@pytest.mark.parametrize(
    "narrowing",
    [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}],
    ids=["top_k=1", "top_p~0", "min_p=1"],
)
def test_a_filter_that_keeps_one_token_makes_sampling_greedy(
    backend: TorchBackend, greedy: str, narrowing: dict[str, Any]
) -> None:
    # At temperature 2 unfiltered sampling wanders off at once; narrowed to the most
    # likely token it must repeat greedy decoding exactly, whatever the seed.
    for seed in (1, 2, 3):
        assert run(backend, max_tokens=40, temperature=2.0, seed=seed, **narrowing)[0] == greedy
    assert run(backend, max_tokens=40, temperature=2.0, seed=1)[0] != greedy


def test_top_k_2_stays_within_the_two_most_likely(backend: TorchBackend) -> None:
    texts = {run(backend, max_tokens=12, temperature=2.0, seed=s, top_k=2)[0] for s in range(6)}
    wide = {run(backend, max_tokens=12, temperature=2.0, seed=s)[0] for s in range(6)}
    assert len(texts) > 1  # still sampling
    assert texts != wide


def test_repetition_penalty_makes_fewer_repeats(backend: TorchBackend) -> None:
    def repeats(text: str) -> int:
        ids = backend._tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids) - len(set(ids))

    plain = run(backend, max_tokens=60, temperature=0)[0]
    penalised = run(backend, max_tokens=60, temperature=0, repetition_penalty=2.0)[0]
    assert penalised != plain
    assert repeats(penalised) < repeats(plain)


def test_same_seed_same_output_with_every_filter(backend: TorchBackend) -> None:
    params = {"temperature": 1.3, "top_p": 0.9, "top_k": 50, "min_p": 0.01, "seed": 42}
    first = run(backend, max_tokens=30, repetition_penalty=1.2, **params)
    assert run(backend, max_tokens=30, repetition_penalty=1.2, **params) == first


# --- stop sequences --------------------------------------------------------------------


def test_stop_sequence_ends_the_text_before_it(backend: TorchBackend, greedy: str) -> None:
    stop = greedy[10:14]
    text, result = run(backend, max_tokens=40, temperature=0, stop=("never-there", stop))
    assert text == greedy[: greedy.index(stop)]
    assert result.stop_reason is StopReason.STOP_SEQUENCE
    assert result.stop_sequence == stop
    assert result.tokens_out < 40


def test_an_absent_stop_sequence_changes_nothing(backend: TorchBackend, greedy: str) -> None:
    text, result = run(backend, max_tokens=40, temperature=0, stop=("\u2603\u2603",))
    assert (text, result.stop_reason, result.stop_sequence) == (
        greedy,
        StopReason.MAX_TOKENS,
        None,
    )


def test_stop_matcher_holds_back_a_partial_match_across_pieces() -> None:
    matcher = StopMatcher(["END", "xyz"])
    assert matcher.push("abcE") == ("abc", None)  # "E" may start "END"
    assert matcher.push("N") == ("", None)
    assert matcher.push("Dtail") == ("", "END")
    other = StopMatcher(["END"])
    assert other.push("aEN") == ("a", None)
    assert other.push("X") == ("ENX", None)  # it was not a match after all
    assert other.push("tail E") == ("tail ", None)
    assert other.flush() == "E"


# --- chat templates -----------------------------------------------------------------------


def test_messages_are_rendered_with_the_models_template(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "chat-model"))
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    chat = TorchBackend(model_dir, "cpu")
    chat.load(lambda progress: None)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = chat.render_chat(messages)
    assert prompt == "<s><|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    # The template wrote the BOS token; the tokenizer must not add a second one.
    ids = chat._prompt_ids(prompt)
    assert ids.count(chat._tokenizer.bos_token_id) == 1


def test_a_model_without_a_template_refuses_messages(backend: TorchBackend) -> None:
    with pytest.raises(ChatTemplateMissing, match="has no chat template"):
        backend.render_chat([{"role": "user", "content": "Hi"}])


# --- request checks for the new fields -----------------------------------------------------


def test_every_bad_sampling_field_is_listed_with_its_constraint() -> None:
    body = {
        "job_id": "j",
        "prompt": "p",
        "top_p": 1.5,
        "top_k": -1,
        "min_p": "x",
        "repetition_penalty": 0,
        "stop": ["a", "b", "c", "d", "e"],
    }
    with pytest.raises(InvalidRequest) as caught:
        parse_inference(body)
    assert [(f.field, f.constraint) for f in caught.value.fields] == [
        ("top_p", "range"),
        ("top_k", "range"),
        ("min_p", "type"),
        ("repetition_penalty", "range"),
        ("stop", "max_items"),
    ]


def test_messages_and_prompt_rules() -> None:
    spec = parse_inference({"job_id": "j", "messages": [{"role": "user", "content": "hi"}]})
    assert spec.messages == [{"role": "user", "content": "hi"}] and spec.prompt == ""
    assert parse_inference({"job_id": "j", "prompt": "p", "stop": "x"}).params.stop == ("x",)
    for body, constraint in [
        ({"prompt": "p", "messages": [{"role": "user", "content": "hi"}]}, "exclusive"),
        ({}, "required"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            parse_inference({"job_id": "j", **body})
        assert [(f.field, f.constraint) for f in caught.value.fields] == [("prompt", constraint)]
    with pytest.raises(InvalidRequest) as caught:
        parse_inference({"job_id": "j", "messages": [{"role": "wizard", "content": "x"}]})
    assert [(f.field, f.constraint) for f in caught.value.fields] == [("messages", "shape")]
