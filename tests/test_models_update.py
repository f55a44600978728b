"""`POST /v2/registry/models/update` and `rbee-keeper models update` through a
real queen and two nodes on the real sshd: only the settings given change, bad
ones are refused as `add` refuses them and write nothing, and the next request
is placed by the new settings at once."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.sshd import SshServer
from tests.test_infer_e2e import add_node, stream_task, workers
from tests.test_models_hub import keeper


@pytest.fixture(scope="module")
def two_node_queen(sshd: SshServer) -> Iterator[QueenProcess]:
    with tempfile.TemporaryDirectory(prefix="rbee-models-update-") as home:
        queen = start_queen(Path(home))
        try:
            for name in ("n1", "n2"):
                add_node(queen, sshd, Path(home) / name, name)
            yield queen
        finally:
            stop_queen(queen)


@pytest.fixture
def catalog_model(two_node_queen: QueenProcess, tiny_model_dir: Path) -> Iterator[str]:
    """A catalog name on n1, removed again after the test."""
    body = {"name": "tiny", "model_ref": f"file:{tiny_model_dir}", "nodes": ["n1"], "slots": 2}
    with two_node_queen.client() as c:
        assert c.post("/v2/registry/models/add", json=body).status_code == 201
    yield "tiny"
    with two_node_queen.client() as c:
        c.post("/v2/registry/models/remove", json={"name": "tiny"})


def update(queen: QueenProcess, **body: Any) -> Any:
    with queen.client() as c:
        return c.post("/v2/registry/models/update", json=body)


def listed(queen: QueenProcess) -> dict[str, Any]:
    with queen.client() as c:
        (model,) = c.get("/v2/registry/models/list").json()["models"]
    return dict(model)


def test_each_setting_changes_alone(two_node_queen: QueenProcess, catalog_model: str) -> None:
    before = listed(two_node_queen)
    steps: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"nodes": ["n2", "n1"]}, {"nodes": ["n2", "n1"]}),
        ({"slots": 5}, {"slots": 5}),
        ({"backend": "cuda", "device": 1}, {"device": "cuda:1"}),
        ({"backend": "cpu"}, {"device": "cpu"}),
        ({"memory_limit_mib": 512}, {"memory_limit_mib": 512}),
        ({"memory_limit_mib": -1}, {"memory_limit_mib": -1}),
    ]
    expected = dict(before)
    for body, changed in steps:
        r = update(two_node_queen, name=catalog_model, **body)
        assert r.status_code == 200, r.text
        expected |= changed
        assert r.json()["model"] == expected, body
        assert listed(two_node_queen) == expected, body  # the others as they were


def test_bad_updates_are_refused_and_write_nothing(
    two_node_queen: QueenProcess, catalog_model: str
) -> None:
    before = listed(two_node_queen)
    refused: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({}, 400, "INVALID_REQUEST", None),  # nothing to change
        ({"nodes": None}, 400, "INVALID_REQUEST", None),
        ({"slots": 0}, 400, "INVALID_REQUEST", "slots"),
        ({"slots": 65, "nodes": ["n2"]}, 400, "INVALID_REQUEST", "slots"),
        ({"nodes": []}, 400, "INVALID_REQUEST", "nodes"),
        ({"nodes": ["bad name"]}, 400, "INVALID_REQUEST", "nodes"),
        ({"backend": "metal"}, 400, "INVALID_REQUEST", "backend"),
        ({"memory_limit_mib": 2**40}, 400, "INVALID_REQUEST", "memory_limit_mib"),
        ({"memory_limit_mib": "lots"}, 400, "INVALID_REQUEST", "memory_limit_mib"),
        ({"nodes": ["n2", "ghost"], "slots": 9}, 404, "NODE_NOT_FOUND", None),
    ]
    for body, status, code, field in refused:
        r = update(two_node_queen, name=catalog_model, **body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
        if field is not None:
            assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == [field]
        assert listed(two_node_queen) == before, body
    r = update(two_node_queen, name="nobody", slots=2)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "MODEL_NOT_FOUND"), r.text
    with two_node_queen.client() as c:
        r = c.post("/v2/registry/models/update", json={"slots": 2})  # no name
        assert r.status_code == 400 and r.json()["error"]["details"]["fields"][0]["field"] == "name"
        plain = c.post("/v2/keys/add", json={"name": "reader", "admin": False}).json()["token"]
    with two_node_queen.client(token=plain) as c:  # admin only, as add and remove are
        r = c.post("/v2/registry/models/update", json={"name": catalog_model, "slots": 7})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), r.text
    assert listed(two_node_queen) == before


def test_the_cli_updates_and_prints_the_row(
    two_node_queen: QueenProcess, catalog_model: str
) -> None:
    argv = ["models", "update", catalog_model, "--node", "n2", "--slots", "3"]
    done = keeper(two_node_queen, *argv, "--memory-limit", "256")
    assert done.returncode == 0, done.stderr
    assert "tiny" in done.stdout and "on n2" in done.stdout and "256 MiB" in done.stdout
    shown = keeper(two_node_queen, "models", "catalog")
    (row,) = [line.split() for line in shown.stdout.splitlines() if line.startswith("tiny")]
    assert row[2:] == ["n2", "3", "cpu", "256", "MiB"]
    missing = keeper(two_node_queen, "models", "update", "nobody", "--slots", "2")
    assert missing.returncode != 0 and "MODEL_NOT_FOUND" in missing.stderr
    nothing = keeper(two_node_queen, "models", "update", catalog_model)
    assert nothing.returncode != 0 and "INVALID_REQUEST" in nothing.stderr
    assert listed(two_node_queen)["slots"] == 3


def test_the_next_request_goes_to_the_new_node(
    two_node_queen: QueenProcess, catalog_model: str
) -> None:
    events, _ = stream_task(two_node_queen, model=catalog_model, prompt="hi", max_tokens=1)
    assert events[-1]["type"] == "DONE", events
    assert {w["node"] for w in workers(two_node_queen)} == {"n1"}
    assert update(two_node_queen, name=catalog_model, nodes=["n2"]).status_code == 200
    events, _ = stream_task(two_node_queen, model=catalog_model, prompt="hi", max_tokens=1)
    assert events[-1]["type"] == "DONE", events
    # The worker on n1 keeps running; the request was placed on n2 at once.
    assert sorted(w["node"] for w in workers(two_node_queen)) == ["n1", "n2"]
