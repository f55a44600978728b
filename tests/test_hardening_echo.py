"""Error messages never echo unsafe input: every route and keeper command that
names a request's or a file's value is sent control characters, a bidi mark,
shell characters and a long string, against a real queen; the answer keeps its
code and status and quotes none of them (rbee_wire.error_text.shown)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from rbee_keeper.cli import main as keeper
from rbee_keeper.keeper_config import load_keeper_settings
from rbee_queen.config import QueenConfig
from rbee_queen.config_load import ConfigInvalid
from rbee_queen.errors import ConfigRejected
from rbee_wire.error_text import NOT_SHOWN, shown
from tests.plugins.queen import QueenProcess, start_queen, stop_queen

UNSAFE = {
    "control": "local\x1b[2J\r\n",
    "bidi": "gpu\u202e1",
    "shell": "x;touch PWN$(id)`",
    "long": "A" * 5000,
}
RAW_MARKS = ("\x1b", "\r", "\n", "\u202e", ";", "$(", "`", "A" * 81)


def assert_not_echoed(text: str, value: str) -> None:
    assert value not in text, text[:300]
    assert not [mark for mark in RAW_MARKS if mark in text], text[:300]


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


NODE = {"node_name": "n1", "ssh_host": "127.0.0.1", "ssh_port": 1, "ssh_user": "u"}
# (method, path, body) with V where the unsafe value goes; the answers allowed.
ROUTES: dict[str, tuple[str, str, Any, set[tuple[int, str]]]] = {
    "worker-events": ("GET", "/v2/workers/V/events", None, {(404, "WORKER_NOT_FOUND")}),
    "logs": ("GET", "/v2/logs?worker_id=V", None, {(400, "INVALID_REQUEST")}),
    "node-remove": (
        "POST",
        "/v2/registry/beehives/remove",
        {"node_name": "V"},
        {(400, "INVALID_REQUEST")},
    ),
    "node-key": (
        "POST",
        "/v2/registry/beehives/add",
        {**NODE, "ssh_key_path": "V"},
        {(400, "INVALID_REQUEST"), (400, "SSH_KEY_NOT_FOUND")},
    ),
    "node-import": (
        "POST",
        "/v2/registry/beehives/import",
        {"nodes": [{**NODE, "node_name": "V"}]},
        {(400, "INVALID_REQUEST")},
    ),
    "model-remove": (
        "POST",
        "/v2/registry/models/remove",
        {"name": "V"},
        {(400, "INVALID_REQUEST")},
    ),
    "model-download": (
        "POST",
        "/v2/models/download",
        {"model": "V", "node": "n1"},
        {(400, "INVALID_REQUEST")},
    ),
    "worker-shutdown": (
        "POST",
        "/v2/workers/shutdown",
        {"worker_id": "V"},
        {(400, "INVALID_REQUEST")},
    ),
    "key-revoke": ("POST", "/v2/keys/revoke", {"name": "V"}, {(400, "INVALID_REQUEST")}),
    "task": ("POST", "/v2/tasks", {"model": "V", "prompt": "hi"}, {(400, "INVALID_REQUEST")}),
    "completion": (
        "POST",
        "/v1/completions",
        {"model": "V", "prompt": "hi"},
        {(400, "invalid_request")},
    ),
    "no-route": ("GET", "/v2/V", None, {(404, "NOT_FOUND")}),
}


@pytest.fixture(scope="module")
def queen_e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueenProcess]:
    queen = start_queen(tmp_path_factory.mktemp("echo-home"))
    try:
        yield queen
    finally:
        stop_queen(queen)


@pytest.fixture(scope="module")
def plain_token(queen_e: QueenProcess) -> str:
    with queen_e.client() as client:
        r = client.post("/v2/keys/add", json={"name": "plain"})
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def filled(template: Any, value: str) -> Any:
    return json.loads(json.dumps(template).replace('"V"', json.dumps(value)))


@pytest.mark.parametrize("kind", UNSAFE)
@pytest.mark.parametrize("route", ROUTES)
def test_a_route_never_echoes_an_unsafe_value(queen_e: QueenProcess, route: str, kind: str) -> None:
    method, path, body, allowed = ROUTES[route]
    value = UNSAFE[kind]
    with queen_e.client() as client:
        r = client.request(
            method, path.replace("V", quote(value, safe="")), json=filled(body, value)
        )
    error = r.json()["error"]
    assert (r.status_code, error["code"]) in allowed, r.text[:300]
    for text in strings_in(error):
        assert_not_echoed(text, value)


@pytest.mark.parametrize("kind", UNSAFE)
def test_a_plain_key_refused_an_admin_route_is_not_told_the_path(
    queen_e: QueenProcess, plain_token: str, kind: str
) -> None:
    with queen_e.client(plain_token) as client:
        r = client.post(f"/v2/registry/{quote(UNSAFE[kind], safe='')}", json={})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert_not_echoed(r.json()["error"]["message"], UNSAFE[kind])


# The keeper's error line each case must end in (either, where two are given).
URL_FLAG = "argument --queen-url: not an http(s) URL"
KEEPER_CASES: dict[str, tuple[str, ...]] = {
    "add-node-key": ("[SSH_KEY_NOT_FOUND]",),
    "import-key": ("[SSH_KEY_NOT_FOUND]",),
    "import-unknown-key": ("[INVALID_REQUEST]",),
    "queen-url-flag": (URL_FLAG,),
    "queen-url-env": ("[QUEEN_UNAVAILABLE]", URL_FLAG),
}
NO_QUEEN = "http://queen.invalid:8080"  # never resolves: no queen is started or reached


def keeper_argv(case: str, value: str, tmp_path: Path) -> list[str]:
    inventory = tmp_path / "nodes.toml"
    if case == "add-node-key":
        node = ["--name", "n1", "--ssh-host", "h", "--ssh-user", "u", "--install-path", "~/.rbee"]
        return ["setup", "add-node", *node, "--ssh-key", value, "--queen-url", NO_QUEEN]
    if case == "import-key":
        inventory.write_text(
            f"[nodes.n1]\nssh_host = 'h'\nssh_user = 'u'\nssh_key = {json.dumps(value)}\n"
        )
        return ["setup", "import", str(inventory), "--queen-url", NO_QUEEN]
    if case == "import-unknown-key":
        inventory.write_text(f"[nodes.n1]\nssh_host = 'h'\n{json.dumps(value)} = 1\n")
        assert value in tomllib.loads(inventory.read_text())["nodes"]["n1"]
        return ["setup", "import", str(inventory), "--queen-url", NO_QUEEN]
    if case == "queen-url-flag":
        return ["--queen-url", value, "status"]
    return ["workers", "list"]


@pytest.mark.parametrize("kind", UNSAFE)
@pytest.mark.parametrize("case", KEEPER_CASES)
def test_a_keeper_command_never_echoes_an_unsafe_value(
    case: str,
    kind: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = UNSAFE[kind]
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    monkeypatch.setenv("RBEE_QUEEN_URL", f"{NO_QUEEN}/{value}")
    try:
        code = keeper(keeper_argv(case, value, tmp_path))
    except SystemExit as exited:  # argparse refuses a flag this way
        code = exited.code
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code not in (0, None)
    assert any(expected in line for expected in KEEPER_CASES[case]), err[-300:]
    assert value not in err
    assert_not_echoed(line, value)


@pytest.mark.parametrize("kind", UNSAFE)
def test_the_keeper_config_never_echoes_an_unsafe_value(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "rbee"
    folder.mkdir()
    value = UNSAFE[kind]
    (folder / "keeper.toml").write_text(
        f"queen_url = {json.dumps(value)}\n{json.dumps(value)} = 1\n"
    )
    with pytest.raises(ConfigRejected) as rejected:
        load_keeper_settings({"XDG_CONFIG_HOME": str(tmp_path)})
    problems = rejected.value.details["problems"]
    assert len(problems) == 1 and "unknown key" in problems[0]
    assert_not_echoed(rejected.value.message.replace(str(tmp_path), ""), value)


@pytest.mark.parametrize("kind", UNSAFE)
def test_the_queen_config_never_echoes_an_unsafe_value(tmp_path: Path, kind: str) -> None:
    value = json.dumps(UNSAFE[kind])  # a TOML string and a quoted TOML key alike
    text = f"[server]\nport = {value}\n{value} = 1\n[{value}]\na = 1\n"
    (tmp_path / "queen.toml").write_text(text)
    with pytest.raises(ConfigInvalid) as caught:
        QueenConfig.load(environ={"RBEE_HOME": str(tmp_path), "RBEE_LOG_LEVEL": UNSAFE[kind]})
    problems = [p.replace(str(tmp_path), "") for p in caught.value.problems]
    assert len(problems) == 4 and "unknown section" in " ".join(problems), problems
    for problem in problems:
        assert_not_echoed(problem, UNSAFE[kind])


@pytest.mark.parametrize(
    ("value", "expected"),
    [("gpu-1", "'gpu-1'"), ("/home/u/.ssh/id_ed25519", "'/home/u/.ssh/id_ed25519'")]
    + [(v, NOT_SHOWN) for v in UNSAFE.values()],
)
def test_the_rule_quotes_only_short_plain_values(value: str, expected: str) -> None:
    assert shown(value) == expected


def test_the_queen_answers_a_plain_lookup_with_its_name(queen_e: QueenProcess) -> None:
    with queen_e.client() as client:
        r = client.get("/v2/workers/w-404/events")
    assert (r.status_code, r.json()["error"]["message"]) == (404, "no worker 'w-404'")
    with httpx.Client(base_url=queen_e.url) as anonymous:
        assert anonymous.get("/health").status_code == 200
