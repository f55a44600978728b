"""Inventory import, ~/.ssh/config aliases and `nodes status`, over real test hosts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rbee_keeper.cli import main
from rbee_keeper.inventory import load_inventory
from rbee_queen.errors import InvalidRequest
from rbee_queen.fleet import ssh_config
from rbee_queen.nodes.inventory import NodeSpec
from tests.plugins.queen import QueenProcess, start_queen, stop_queen
from tests.plugins.testbed import Testbed

ROOT = Path(__file__).parent.parent


def test_example_inventory_loads_and_validates(tmp_path: Path) -> None:
    requests = load_inventory(ROOT / "inventory.example.toml")
    assert [r["node_name"] for r in requests] == ["gpu1", "gpu2", "gpu3"]
    gpu2 = requests[1]
    assert gpu2["ssh_port"] == 2222 and gpu2["ssh_user"] == "alice"
    assert gpu2["worker_python"] == "/home/alice/.rbee/venv/bin/python"
    assert Path(gpu2["ssh_key_path"]).is_absolute()
    assert gpu2["worker_access"] == "direct" and gpu2["model_source"] == "hub"
    for request in requests:  # what the queen would accept, field by field
        assert NodeSpec.parse(request).name == request["node_name"]
    specs = {s.name: s for s in map(NodeSpec.parse, requests)}
    assert (specs["gpu2"].worker_access, specs["gpu2"].model_source) == ("direct", "hub")
    assert (specs["gpu1"].worker_access, specs["gpu1"].model_source) == ("ssh", "queen")


def test_node_settings_outside_their_choices_are_refused() -> None:
    body = {"node_name": "a", "ssh_host": "10.0.0.5", "ssh_user": "alice"}
    with pytest.raises(InvalidRequest) as bad:
        NodeSpec.parse({**body, "worker_access": "tcp", "model_source": "s3"})
    assert [f["field"] for f in bad.value.details["fields"]] == ["worker_access", "model_source"]
    assert "worker_access must be ssh or direct" in str(bad.value.details["fields"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nodes.a]\nssh_hots = 'x'\n", "unknown key 'ssh_hots'"),
        ("[nodes.a]\nssh_port = '22'\n", "ssh_port must be a int"),
        ("[defaults]\nssh_user = 'a'\n", "no [nodes.NAME] tables"),
        ("[nodes.a\n", "not valid TOML"),
        ("[hosts.a]\n", "unknown section 'hosts'"),
    ],
)
def test_bad_inventory_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(text)
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[")):
        load_inventory(path)


def test_ssh_config_alias_resolution(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "User everyone\n"
        "Host gpu? !gpu9\n"
        "    HostName %h.lab.example\n"
        "    Port 2222\n"
        "Host gpu1\n"
        "    Port 22\n"  # too late: the first value found wins, as in OpenSSH
        "    IdentityFile ~/.ssh/gpu_key\n"
        "Host *\n"
        "    User fallback\n"
    )
    gpu1 = ssh_config.resolve("gpu1", config)
    assert gpu1.host == "gpu1.lab.example" and gpu1.port == 2222
    assert gpu1.user == "everyone"
    assert gpu1.identity_file == str(Path.home() / ".ssh" / "gpu_key")
    assert ssh_config.resolve("gpu9", config).host == "gpu9"  # excluded by !gpu9
    assert ssh_config.resolve("other", tmp_path / "missing") == ssh_config.HostAlias("other")


@pytest.fixture
def fleet_queen(
    testbed: Testbed, rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> QueenProcess:
    """A queen that trusts the test hosts' keys, with a ~/.ssh/config naming one of them."""
    shutil.copy(testbed.known_hosts, rbee_home / "known_hosts")
    home = tmp_path / "user-home"
    (home / ".ssh").mkdir(parents=True)
    alias = testbed.hosts[1]
    (home / ".ssh" / "config").write_text(
        f"Host lab-box\n  HostName {alias.address}\n  User {alias.user}\n"
        f"  IdentityFile {testbed.client_key}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RBEE_HEALTH_INTERVAL", "0")  # status is probed on demand here
    # A cut host costs a status call its whole timeout (connect timeout + 5 s).
    monkeypatch.setenv("RBEE_SSH_CONNECT_TIMEOUT", "2")
    return start_queen(rbee_home)


def test_import_status_and_aliases(
    fleet_queen: QueenProcess, testbed: Testbed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h0, _, h2, h3 = testbed.hosts
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        f'[defaults]\nssh_key = "{testbed.client_key}"\n\n'
        f'[nodes.n0]\nssh_host = "{h0.address}"\nssh_user = "{h0.user}"\n'
        'worker_access = "direct"\nmodel_source = "hub"\n\n'
        '[nodes.n1]\nssh_host = "lab-box"\n\n'
        f'[nodes.n2]\nssh_host = "{h2.address}"\nssh_user = "{h2.user}"\n\n'
        f'[nodes.n3]\nssh_host = "{h3.address}"\nssh_user = "nobody-here"\n'
    )
    url = ["--queen-url", fleet_queen.url]
    try:
        assert main([*url, "setup", "import", str(inventory)]) == 1  # n3 fails
        out = capsys.readouterr().out
        assert "added    n0" in out and "added    n1" in out and "added    n2" in out
        assert "failed   n3: [SSH_AUTH_FAILED]" in out
        # Again: the three are reported as existing, not overwritten.
        assert main([*url, "setup", "import", str(inventory)]) == 1
        out = capsys.readouterr().out
        assert "exists   n0" in out and "exists   n1" in out and "added" not in out
        # The per-node settings travel with the import; unset ones keep their defaults.
        assert main([*url, "--json", "setup", "list-nodes"]) == 0
        listed = {n["node_name"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
        assert (listed["n0"]["worker_access"], listed["n0"]["model_source"]) == ("direct", "hub")
        assert (listed["n1"]["worker_access"], listed["n1"]["model_source"]) == ("ssh", "queen")

        assert main([*url, "--json", "nodes", "status"]) == 0
        nodes = {n["node_name"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
        assert set(nodes) == {"n0", "n1", "n2"}
        assert nodes["n1"]["hostname"] == testbed.hosts[1].hostname  # the alias's host
        for node in nodes.values():
            assert node["status"] == "reachable" and node["error"] is None
            assert node["latency_ms"] > 0 and node["cpus"] >= 1
            assert node["python"].startswith("3.") and node["backends"][0] == "cpu"
            assert node["ram_total_bytes"] > node["ram_available_bytes"] > 0

        h2.set_link(up=False)
        assert main([*url, "nodes", "status"]) == 0
        captured = capsys.readouterr()
        rows = {line.split()[0]: line for line in captured.out.splitlines()[1:]}
        assert "reachable" in rows["n0"] and " ms " in rows["n0"]
        assert "unreachable" in rows["n2"]
        assert "n2: [" in captured.err

        assert main([*url, "--json", "nodes", "status", "--node", "n1"]) == 0
        (only,) = json.loads(capsys.readouterr().out)["nodes"]
        assert only["node_name"] == "n1" and only["status"] == "reachable"
        assert main([*url, "nodes", "status", "--node", "ghost"]) == 1
        assert "[NODE_NOT_FOUND]" in capsys.readouterr().err
    finally:
        h2.set_link(up=True)
        stop_queen(fleet_queen)


def add_body(testbed: Testbed, index: int, name: str, **extra: object) -> dict[str, object]:
    host = testbed.hosts[index]
    return {
        "node_name": name,
        "ssh_host": host.address,
        "ssh_user": host.user,
        "ssh_key_path": str(testbed.client_key),
        **extra,
    }


def test_preflight_names_each_check(fleet_queen: QueenProcess, testbed: Testbed) -> None:
    try:
        with fleet_queen.client() as c:
            r = c.post("/v2/registry/beehives/add", json=add_body(testbed, 0, "p0"))
        assert r.status_code == 201, r.text
        checks = r.json()["preflight"]
        assert [c["name"] for c in checks] == [
            "key", "connect", "host_key", "authenticate", "run", "latency", "python",
            "install_path", "disk",
        ]  # fmt: skip
        assert all(c["ok"] for c in checks)
        assert checks[-3]["detail"].startswith("python 3.")
    finally:
        stop_queen(fleet_queen)


def test_preflight_failures_say_what_to_do(
    fleet_queen: QueenProcess, testbed: Testbed, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    try:
        with fleet_queen.client() as c:
            body = add_body(testbed, 0, "p1", ssh_key_path=str(stranger))
            r = c.post("/v2/registry/beehives/add", json=body)
            assert r.status_code == 502
            error = r.json()["error"]
            assert error["code"] == "SSH_AUTH_FAILED"
            assert error["details"]["check"] == "authenticate"
            assert "authorized_keys" in error["details"]["suggestion"]
            assert "preflight authenticate" in error["message"]

            stranger.chmod(0o644)  # a key others can read is refused before any login
            r = c.post("/v2/registry/beehives/add", json=body)
            error = r.json()["error"]
            assert error["details"]["check"] == "key", error
            assert error["details"]["suggestion"] == f"chmod 600 {stranger}"

            # The node's ordinary user may not write under /root.
            r = c.post(
                "/v2/registry/beehives/add",
                json=add_body(testbed, 0, "p2", install_path="/root/rbee-not-yours"),
            )
            assert r.status_code == 502
            error = r.json()["error"]
            assert error["details"]["check"] == "install_path", error
            assert "--install-path" in error["details"]["suggestion"]
            assert [
                n["node_name"] for n in c.get("/v2/registry/beehives/list").json()["nodes"]
            ] == []
    finally:
        stop_queen(fleet_queen)
