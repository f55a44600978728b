"""A black-box probe's findings on input, against a real queen: names, paths and
references with control or bidi characters, allow-list entries, a file that is
not a key, concurrent adds of one node, and messages that echoed bad input."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rbee_keeper.cli import main as keeper
from tests.plugins.queen import QueenProcess, start_queen, stop_queen


@pytest.fixture(scope="module")
def queen_m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueenProcess]:
    queen = start_queen(tmp_path_factory.mktemp("input-home"))
    try:
        yield queen
    finally:
        stop_queen(queen)


def node(port: int, **extra: Any) -> dict[str, Any]:
    return {"node_name": "n1", "ssh_host": "127.0.0.1", "ssh_port": port, "ssh_user": "u", **extra}


def fields_of(r: httpx.Response) -> dict[str, str]:
    return {f["field"]: f["constraint"] for f in r.json()["error"]["details"]["fields"]}


@pytest.mark.parametrize("models", [["file:/x\n"], ["hf:../../etc"], ["hf:Org/Repo\u202e"]])
def test_allow_list_entries_are_validated(queen_m: QueenProcess, models: list[str]) -> None:
    with queen_m.client() as client:
        r = client.post("/v2/keys/add", json={"name": "k1", "models": models})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_REQUEST")
    assert "models" in fields_of(r)


@pytest.mark.parametrize("path", ["/opt/rbee\x1b[2J", "/opt/rbee\r", "/opt/\u202erbee"])
def test_control_and_bidi_characters_are_refused_in_a_path(
    queen_m: QueenProcess, path: str
) -> None:
    with queen_m.client() as client:
        r = client.post("/v2/registry/beehives/add", json=node(1, install_path=path))
    assert r.status_code == 400
    assert fields_of(r) == {"install_path": "characters"}


def test_a_name_with_a_final_newline_is_refused_and_not_echoed(queen_m: QueenProcess) -> None:
    with queen_m.client() as client:
        r = client.post("/v2/registry/beehives/remove", json={"node_name": "local\n"})
    assert r.status_code == 400
    assert fields_of(r) == {"node_name": "characters"}
    assert "local" not in r.json()["error"]["message"]


def test_an_import_item_that_is_not_an_object_names_its_constraint(
    queen_m: QueenProcess,
) -> None:
    with queen_m.client() as client:
        r = client.post("/v2/registry/beehives/import", json={"nodes": [1]})
    assert r.status_code == 400
    assert fields_of(r) == {"nodes[0]": "type"}


def test_a_missing_key_path_with_shell_characters_is_not_echoed(queen_m: QueenProcess) -> None:
    with queen_m.client() as client:
        r = client.post("/v2/registry/beehives/add", json=node(1, ssh_key_path="~/.rbee;touch PWN"))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "SSH_KEY_NOT_FOUND")
    assert "touch" not in r.json()["error"]["message"]


def test_a_file_that_is_not_a_private_key_is_invalid_before_connecting(
    queen_m: QueenProcess,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # counts connection attempts
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    token_file = str(queen_m.home / "api-token")
    with queen_m.client() as client:
        r = client.post("/v2/registry/beehives/add", json=node(port, ssh_key_path=token_file))
    assert (r.status_code, r.json()["error"]["code"]) == (400, "INVALID_SSH_KEY")
    assert "ssh_key_path" in r.json()["error"]["message"]
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing tried to connect
    listener.close()


def test_concurrent_adds_of_one_node_are_409_not_500(queen_m: QueenProcess) -> None:
    # A listener that accepts and never speaks SSH holds the first add in its
    # connect, so the others arrive while it is in flight.
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]

    def add() -> httpx.Response:
        with queen_m.client() as client:
            return client.post("/v2/registry/beehives/add", json=node(port))

    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(add)
        for _ in range(500):  # until the first add's connect is in (at most 10 s)
            if held:
                break
            threading.Event().wait(0.02)
        others = [pool.submit(add) for _ in range(4)]
        answers = [f.result() for f in others]
        for sock in held:
            sock.close()
        listener.close()
        winner = first.result()
    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [
        (409, "NODE_ALREADY_EXISTS")
    ] * 4
    assert winner.status_code != 500, winner.text


def test_setup_import_of_a_deeply_nested_toml_is_a_coded_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "nodes.toml"
    inventory.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert keeper(["setup", "import", str(inventory)]) != 0
    assert "[INVALID_REQUEST]" in capsys.readouterr().err


def test_setup_import_never_echoes_a_table_name_with_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "nodes.toml"
    inventory.write_text('[nodes."x\\u001b[2J\\u202e"]\nbogus = 1\n')
    assert keeper(["setup", "import", str(inventory)]) != 0
    err = capsys.readouterr().err
    assert "[INVALID_REQUEST]" in err
    assert "\x1b" not in err and "\u202e" not in err
