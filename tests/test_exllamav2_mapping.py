"""The exllamav2 backend's pure pieces, no GPU needed: the mapping of rbee's
sampling parameters to exllamav2's sampler settings, of exllamav2's results to
rbee's outcomes, and the arithmetic that sizes the KV cache."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rbee_worker.backends.base import GenerationParams, StopReason
from rbee_worker.backends.cache_budget import (
    PAGE_TOKENS,
    InsufficientVram,
    cache_tokens,
    kv_bytes_per_layer_token,
    round_to_pages,
)
from rbee_worker.backends.exllamav2_mapping import (
    NEUTRAL,
    Outcome,
    apply_sampler_values,
    eos_token_ids,
    outcome_of,
    sampler_values,
    stop_conditions,
)

MIB = 1024 * 1024


# --- sampling parameters -> exllamav2 sampler settings ---------------------------


def test_greedy_is_top_k_one_and_everything_else_off() -> None:
    values = sampler_values(GenerationParams(temperature=0.0, top_k=40, top_p=0.5, min_p=0.2))
    assert (values["temperature"], values["top_k"], values["top_p"], values["min_p"]) == (
        1.0,
        1,
        1.0,
        0.0,
    )
    assert values["token_repetition_penalty"] == 1.0
    assert {k: values[k] for k in NEUTRAL} == dict(NEUTRAL)


def test_sampled_values_pass_through() -> None:
    params = GenerationParams(
        temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.3
    )
    values = sampler_values(params)
    assert values["temperature"] == 0.7
    assert values["top_k"] == 40
    assert values["top_p"] == 0.9
    assert values["min_p"] == 0.05
    assert values["token_repetition_penalty"] == 1.3
    # exllamav2's own defaults (top-k 50, top-p 0.8, penalty 1.025) never leak in.
    defaults = sampler_values(GenerationParams())
    assert (defaults["top_k"], defaults["top_p"], defaults["token_repetition_penalty"]) == (
        0,
        1.0,
        1.0,
    )
    # The penalty covers the whole sequence, prompt included, like the torch backend's.
    assert values["token_repetition_range"] == -1
    assert values["temperature_last"] is False


def test_applying_values_writes_every_field_and_refuses_unknown_ones() -> None:
    values = sampler_values(GenerationParams(temperature=0.5))
    settings = SimpleNamespace(**dict.fromkeys(values, None))
    assert apply_sampler_values(settings, values) is settings
    assert vars(settings) == values
    with pytest.raises(AttributeError, match="no field 'top_k'"):
        apply_sampler_values(SimpleNamespace(temperature=1.0), {"top_k": 1})


def test_eos_ids_come_from_every_source_once() -> None:
    config = {"eos_token_id": [2, 7]}
    generation = {"eos_token_id": 7}
    assert eos_token_ids(config, generation, 9) == [2, 7, 9]
    assert eos_token_ids({}, {}, None) == []
    assert stop_conditions([2], ("\n\n", "END")) == [2, "\n\n", "END"]


# --- exllamav2 results -> rbee outcomes --------------------------------------------


def test_outcome_of_a_stop_token_does_not_count_eos_and_keeps_held_text() -> None:
    result = {"eos": True, "eos_reason": "stop_token", "new_tokens": 5, "held": {"text": "ab"}}
    assert outcome_of(result) == Outcome(StopReason.EOS, 4, tail_text="ab")


def test_outcome_of_a_stop_string_names_it() -> None:
    result = {
        "eos": True,
        "eos_reason": "stop_string",
        "eos_triggering_string": "\n\n",
        "new_tokens": 6,
    }
    assert outcome_of(result) == Outcome(StopReason.STOP_SEQUENCE, 6, stop_sequence="\n\n")


def test_outcome_of_max_new_tokens_and_of_an_unused_reason() -> None:
    assert outcome_of({"eos": True, "eos_reason": "max_new_tokens", "new_tokens": 8}) == Outcome(
        StopReason.MAX_TOKENS, 8
    )
    with pytest.raises(ValueError, match="end_filter"):
        outcome_of({"eos": True, "eos_reason": "end_filter", "new_tokens": 1})


# --- the KV cache's size -----------------------------------------------------------


def test_kv_bytes_of_the_tiny_model(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    # 4 KV heads x head_dim 16 (64 / 4), keys and values, 2 bytes each.
    assert kv_bytes_per_layer_token(config) == 2 * 4 * 16 * 2
    grouped = {"num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    assert kv_bytes_per_layer_token(grouped) == 2 * 8 * 128 * 2


def test_cache_takes_free_vram_minus_the_reserve_in_whole_pages() -> None:
    per = 1024  # bytes per layer per token
    free = {0: 2048 * MIB}
    tokens = cache_tokens(free, {0: 32}, per, reserve_bytes=1024 * MIB, cap_tokens=10**9)
    assert tokens == (1024 * MIB // (32 * per)) // PAGE_TOKENS * PAGE_TOKENS
    assert tokens % PAGE_TOKENS == 0
    # The cap (slots x context) bounds it; a split is bounded by its tightest GPU.
    assert cache_tokens(free, {0: 32}, per, 1024 * MIB, cap_tokens=4096) == 4096
    split = cache_tokens({0: 4096 * MIB, 1: 1536 * MIB}, {0: 16, 1: 16}, per, 1024 * MIB, 10**9)
    assert split == (512 * MIB // (16 * per)) // PAGE_TOKENS * PAGE_TOKENS
    assert round_to_pages(4097) == 4352


def test_no_room_for_one_page_is_insufficient_vram() -> None:
    with pytest.raises(InsufficientVram) as refused:
        cache_tokens({0: 1100 * MIB}, {0: 80}, 4096, 1024 * MIB, 10**9)
    assert refused.value.code == "INSUFFICIENT_VRAM"
    assert "cuda:0 has 1100 MiB free" in str(refused.value)
    assert "--cache-reserve-mb" in str(refused.value)
