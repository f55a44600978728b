"""Fuzzing the helper's RPC parser: any line in gets one well-formed answer out,
and the helper never dies. Bounded: a fixed number of examples, no deadline."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rbee_hive import rpc

# Operations that only read: fuzzing spawn_worker would start random programs.
SAFE_OPS = ["ping", "path_info", "worker_status", "list_workers", "log_tail", "probe"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
requests = st.fixed_dictionaries(
    {"id": json_values, "op": st.sampled_from(SAFE_OPS) | st.text(max_size=12)},
    optional={"args": json_values},
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def answer(line: str) -> list[dict]:
    out = io.StringIO()
    rpc.serve(io.StringIO(line + "\n"), out)
    return [json.loads(reply) for reply in out.getvalue().splitlines()]


def well_formed(reply: dict) -> bool:
    if reply.get("ok") is True:
        return "result" in reply
    error = reply.get("error") or {}
    return reply.get("ok") is False and isinstance(error.get("code"), str)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_line_gets_at_most_one_well_formed_answer(line: str) -> None:
    replies = answer(line.replace("\n", " ").replace("\r", " "))
    assert len(replies) <= 1
    assert all(well_formed(r) for r in replies)


@FUZZ
@given(requests)
def test_any_request_object_gets_one_answer_with_its_id(request: dict) -> None:
    for key in ("run_dir", "path"):  # keep fuzzed reads inside a harmless place
        args = request.get("args")
        if isinstance(args, dict) and key in args:
            args[key] = str(Path("/nonexistent") / str(args[key])[:20])
    [reply] = answer(json.dumps(request))
    assert well_formed(reply)
    assert reply["id"] == request["id"]
