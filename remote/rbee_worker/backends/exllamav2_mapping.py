"""rbee's vocabulary to exllamav2's and back: sampler settings in, outcomes out.

Pure functions over plain values, so they are tested where no GPU is; only
`apply_sampler_values` touches an exllamav2 object, and it is handed that
object, so this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rbee_worker.backends.base import GenerationParams, StopReason

# exllamav2's Settings() defaults are not neutral (temperature 0.8, top-k 50,
# top-p 0.8, repetition penalty 1.025): every field rbee does not expose is set
# to its "off" value here, so a request gets exactly what it asked for.
NEUTRAL: Mapping[str, Any] = {
    "token_repetition_range": -1,  # the whole sequence, prompt included, as the torch backend
    "token_repetition_decay": 0,
    "token_frequency_penalty": 0.0,
    "token_presence_penalty": 0.0,
    "smoothing_factor": 0.0,
    "min_temp": 0.0,
    "max_temp": 0.0,
    "temp_exponent": 1.0,
    "top_a": 0.0,
    "tfs": 0.0,
    "typical": 0.0,
    "skew": 0.0,
    "temperature_last": False,  # temperature before the truncations, as llama.cpp does
    "mirostat": False,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
}


def sampler_values(params: GenerationParams) -> dict[str, Any]:
    """Field values for `ExLlamaV2Sampler.Settings` that sample as `params` asks."""
    values = dict(NEUTRAL)
    values["token_repetition_penalty"] = params.repetition_penalty
    if params.temperature == 0:
        # exllamav2 has no temperature 0; greedy is top-k 1 (as its Settings.greedy()).
        values.update(temperature=1.0, top_k=1, top_p=1.0, min_p=0.0)
    else:
        # top_k 0 and top_p 1 mean "off" in both vocabularies.
        values.update(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
        )
    return values


def apply_sampler_values(settings: Any, values: Mapping[str, Any]) -> Any:
    """Write the values onto a Settings object; refuse a field it does not have,
    so a renamed field in a new exllamav2 fails loudly instead of being ignored."""
    for name, value in values.items():
        if not hasattr(settings, name):
            raise AttributeError(f"exllamav2 sampler settings have no field {name!r}")
        setattr(settings, name, value)
    return settings


def eos_token_ids(
    config: Mapping[str, Any], generation_config: Mapping[str, Any], tokenizer_eos: int | None
) -> list[int]:
    """Every token id the model may end with, from config.json, generation_config.json
    and the tokenizer (instruct models often list several)."""
    ids: set[int] = set()
    for source in (config, generation_config):
        value = source.get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer_eos is not None:
        ids.add(int(tokenizer_eos))
    return sorted(ids)


def stop_conditions(eos_ids: Iterable[int], stop: Iterable[str]) -> list[int | str]:
    """exllamav2's stop list: EOS token ids and the request's stop strings."""
    return [*eos_ids, *stop]


@dataclass(frozen=True)
class Outcome:
    """How a finished exllamav2 job ended, in rbee's terms."""

    stop_reason: StopReason
    tokens_out: int  # tokens the model made, EOS not counted
    stop_sequence: str | None = None
    tail_text: str = ""  # text still held by exllamav2 when the job ended


def outcome_of(result: Mapping[str, Any]) -> Outcome:
    """The last ("eos": True) result of a job -> its Outcome.

    exllamav2 counts the EOS token in `new_tokens`; rbee does not. On a stop
    token it keeps the text it was holding back (a partial stop string) under
    "held" rather than "text"; that text was made, so it is streamed.
    """
    reason = result.get("eos_reason")
    made = int(result.get("new_tokens") or 0)
    if reason == "stop_token":
        held = result.get("held") or {}
        return Outcome(StopReason.EOS, max(0, made - 1), tail_text=str(held.get("text") or ""))
    if reason == "stop_string":
        return Outcome(
            StopReason.STOP_SEQUENCE, made, stop_sequence=str(result.get("eos_triggering_string"))
        )
    if reason == "max_new_tokens":
        return Outcome(StopReason.MAX_TOKENS, made)
    raise ValueError(f"exllamav2 ended a job for a reason rbee does not use: {reason!r}")
