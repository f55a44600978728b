"""The queen's validator, its OpenAPI description and the worker's check all
agree with the one table of request limits (rbee_wire.limits): each bound, a
value just inside and just outside it, and each default."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request

from rbee_queen.api import inference, openai, tasks
from rbee_queen.api.openapi import DOCUMENT
from rbee_queen.errors import InvalidRequest as QueenInvalid
from rbee_queen.validation import Fields
from rbee_wire.limits import LIMITS, SEED_MAX, SURFACE_DEFAULTS, Limit
from rbee_worker.backends.base import GenerationParams
from rbee_worker.params import InvalidRequest as WorkerInvalid
from rbee_worker.params import parse_inference

SAMPLED = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
NUMBERS = [name for name, limit in LIMITS.items() if limit.kind in ("integer", "number")]
ROUTES = {"tasks": "/v2/tasks", "completions": "/v1/completions", "chat": "/v1/chat/completions"}
HI = [{"role": "user", "content": "hi"}]


def queen_refuses(body: dict[str, Any]) -> set[str]:
    """The fields the queen's inference checks refuse in `body`."""
    f = Fields(body if "messages" in body else {"prompt": "p", **body})
    inference.sampling(f, "tasks")
    inference.device(f)
    if "messages" in body:
        inference.messages(f)
    else:
        f.prompt()
    return {p["field"] for p in f.problems}


def worker_refuses(body: dict[str, Any]) -> set[str]:
    """The fields the worker's check refuses in `body`."""
    base = {"job_id": "j"} if "messages" in body else {"job_id": "j", "prompt": "p"}
    try:
        parse_inference({**base, **body})
    except WorkerInvalid as caught:
        return {f.field for f in caught.fields}
    return set()


def _step(limit: Limit, value: int | float, direction: int) -> int | float:
    """The next representable value of the limit's type past `value`."""
    if limit.kind == "integer":
        return int(value) + direction
    return math.nextafter(value, direction * math.inf)


def edges(limit: Limit) -> list[tuple[int | float, bool]]:
    """Values just inside (True) and just outside (False) each bound."""
    lo, hi = limit.minimum, limit.maximum
    lo_in = _step(limit, lo, +1) if limit.exclusive_minimum else lo
    lo_out = lo if limit.exclusive_minimum else _step(limit, lo, -1)
    hi_in = _step(limit, hi, -1) if limit.exclusive_maximum else hi
    hi_out = hi if limit.exclusive_maximum else _step(limit, hi, +1)
    return [(lo_in, True), (lo_out, False), (hi_in, True), (hi_out, False)]


NUMBER_CASES = [
    pytest.param(name, value, ok, id=f"{name}={value!r}")
    for name in NUMBERS
    for value, ok in edges(LIMITS[name])
]


@pytest.mark.parametrize(("name", "value", "accepted"), NUMBER_CASES)
def test_the_queen_takes_a_number_exactly_within_its_bounds(
    name: str, value: float, accepted: bool
) -> None:
    assert queen_refuses({name: value}) == (set() if accepted else {name})


@pytest.mark.parametrize(
    ("name", "value", "accepted"), [c for c in NUMBER_CASES if c.values[0] in SAMPLED]
)
def test_the_worker_takes_a_number_exactly_within_its_bounds(
    name: str, value: float, accepted: bool
) -> None:
    assert worker_refuses({name: value}) == (set() if accepted else {name})


def test_the_seed_is_a_signed_64_bit_integer_on_both_sides() -> None:
    assert SEED_MAX == 2**63 - 1
    for refuses in (queen_refuses, worker_refuses):
        assert refuses({"seed": 2**63 - 1}) == set()
        assert refuses({"seed": 2**63}) == {"seed"}
        assert refuses({"seed": 2**64 - 1}) == {"seed"}


def test_json_integers_are_json_schemas_on_both_sides() -> None:
    # The description's "integer" admits 8.0; so do both checks, and no boolean.
    for refuses in (queen_refuses, worker_refuses):
        assert refuses({"max_tokens": 8.0, "top_k": 40.0}) == set()
        assert refuses({"max_tokens": 8.5, "top_k": True, "seed": float("inf")}) == {
            "max_tokens",
            "top_k",
            "seed",
        }
    params = parse_inference({"job_id": "j", "prompt": "p", "max_tokens": 8.0}).params
    assert params.max_tokens == 8 and isinstance(params.max_tokens, int)


def _lengths() -> list[tuple[dict[str, Any], set[str]]]:
    stop, prompt, messages = LIMITS["stop"], LIMITS["prompt"], LIMITS["messages"]
    item = stop.item
    assert item is not None
    return [
        ({"stop": ["s"] * int(stop.maximum)}, set()),
        ({"stop": ["s"] * (int(stop.maximum) + 1)}, {"stop"}),
        ({"stop": ["s" * int(item.maximum)]}, set()),
        ({"stop": ["s" * (int(item.maximum) + 1)]}, {"stop"}),
        ({"stop": "s" * (int(item.minimum) - 1)}, {"stop"}),
        ({"prompt": "p" * int(prompt.maximum)}, set()),
        ({"prompt": "p" * (int(prompt.maximum) + 1)}, {"prompt"}),
        ({"messages": HI * int(messages.minimum)}, set()),
        ({"messages": HI * int(messages.maximum)}, set()),
        ({"messages": HI * (int(messages.maximum) + 1)}, {"messages"}),
        ({"messages": HI * (int(messages.minimum) - 1)}, {"messages"}),
    ]


@pytest.mark.parametrize(("body", "refused"), _lengths(), ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("refuses", [queen_refuses, worker_refuses], ids=["queen", "worker"])
def test_lengths_and_counts_agree(
    refuses: Callable[[dict[str, Any]], set[str]], body: dict[str, Any], refused: set[str]
) -> None:
    assert refuses(body) == refused


def test_the_messages_stay_as_they_were() -> None:
    f = Fields({"temperature": 3, "repetition_penalty": 0, "top_k": -1, "stop": ["a"] * 5})
    inference.sampling(f, "tasks")
    assert [p["message"] for p in f.problems] == [
        "temperature must be between 0 and 2",
        "top_k must be between 0 and 1000000",
        "repetition_penalty must be between 0.01 and 2",
        "stop takes at most 4 strings",
    ]
    with pytest.raises(WorkerInvalid) as caught:
        parse_inference({"job_id": "j", "prompt": "p", "temperature": 3, "max_tokens": 0})
    assert str(caught.value) == "max_tokens must be 1..2048; temperature must be 0..2"


def _body(path: str) -> dict[str, Any]:
    described: dict[str, Any] = DOCUMENT["paths"][path]["post"]["requestBody"]
    properties: dict[str, Any] = described["content"]["application/json"]["schema"]["properties"]
    return properties


def _bounds(schema: dict[str, Any]) -> dict[str, Any]:
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    keys += ("minLength", "maxLength", "minItems", "maxItems")
    return {k: schema[k] for k in keys if k in schema}


@pytest.mark.parametrize("path", ROUTES.values())
def test_the_description_states_the_tables_bounds(path: str) -> None:
    body = _body(path)
    for name in (*SAMPLED, "device"):
        limit = LIMITS[name]
        assert body[name]["type"] == limit.kind, name
        assert _bounds(body[name]) == {"minimum": limit.minimum, "maximum": limit.maximum}, name
    stop = LIMITS["stop"]
    assert stop.item is not None
    one, many = body["stop"]["oneOf"]
    assert _bounds(one) == {"minLength": stop.item.minimum, "maxLength": stop.item.maximum}
    assert _bounds(many) == {"minItems": stop.minimum, "maxItems": stop.maximum}
    assert many["items"] == one


def test_the_description_states_the_prompt_and_message_limits() -> None:
    prompt = LIMITS["prompt"]
    wanted = {"minLength": prompt.minimum, "maxLength": prompt.maximum}
    assert _bounds(_body("/v2/tasks")["prompt"]) == wanted
    assert _bounds(_body("/v1/completions")["prompt"]["oneOf"][0]) == wanted
    chat = _body("/v1/chat/completions")
    messages = LIMITS["messages"]
    assert _bounds(chat["messages"]) == {"minItems": messages.minimum, "maxItems": messages.maximum}
    assert _bounds(chat["max_completion_tokens"]) == _bounds(chat["max_tokens"])


def test_the_worker_defaults_are_the_tables() -> None:
    defaults = {name: LIMITS[name].default for name in (*SAMPLED, "stop")}
    assert GenerationParams() == GenerationParams(**defaults)
    assert parse_inference({"job_id": "j", "prompt": "p"}).params == GenerationParams(**defaults)


@pytest.mark.parametrize(("surface", "path"), ROUTES.items())
def test_each_surfaces_defaults_are_described_and_taken(surface: str, path: str) -> None:
    given = SURFACE_DEFAULTS[surface]
    wanted = {name: given.get(name, LIMITS[name].default) for name in SAMPLED}
    params = inference.sampling(Fields({}), surface)
    assert params == {k: v for k, v in wanted.items() if v is not None}
    described = {name: _body(path)[name].get("default") for name in SAMPLED}
    assert described == wanted
    assert _route_surface(surface) == surface


def _route_surface(surface: str) -> str:
    """The surface whose defaults the route itself asks inference.sampling for."""
    seen: list[str] = []

    def record(f: Fields, asked: str) -> dict[str, Any]:
        seen.append(asked)
        raise QueenInvalid("recorded")

    handler = {
        "tasks": tasks.create_task,
        "completions": openai.completions,
        "chat": openai.chat_completions,
    }[surface]
    body = json.dumps({"model": "m", "prompt": "p", "messages": HI}).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inference, "sampling", record)
        try:
            asyncio.run(handler(request))  # type: ignore[arg-type]
        except QueenInvalid:
            pass  # /v2/tasks raises; the OpenAI routes answer in OpenAI's shape
    (asked,) = seen
    return asked
