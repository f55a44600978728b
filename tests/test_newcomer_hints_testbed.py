"""docs/troubleshooting.md's lines that need a node apart from the queen, for real.

The nodes are test hosts (tests/plugins/testbed.py): network namespaces, each
with its own sshd and an ordinary user. The fake hub listens on the queen's
loopback, which a host's own loopback is not: a node that downloads for
itself cannot reach it, as a node behind a firewall cannot reach the hub. And
a host's user may not write under /root: an install path the login cannot
write, refused by add-node's preflight before anything is stored.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.lifecycle_support import worker_python_on
from tests.plugins.fakehub import FakeHub
from tests.plugins.queen import QueenProcess
from tests.plugins.testbed import Testbed
from tests.test_lifecycle import skip_unless_the_hosts_run_this_python
from tests.test_models_hub import download
from tests.test_newcomer_hints import add_node, row_patterns
from tests.test_newcomer_hints_models import assert_shown, last_error


def host_body(testbed: Testbed, name: str, **extra: object) -> dict[str, object]:
    host = testbed.hosts[0]
    return {
        "node_name": name,
        "ssh_host": host.address,
        "ssh_user": host.user,
        "ssh_key_path": str(testbed.client_key),
        "accept_new_host_key": True,
        # Its own folder: the session's hosts are shared with other tests.
        "install_path": f"~/hints-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def test_a_node_that_cannot_reach_the_hub_matches_its_line(
    hub_queen: QueenProcess, fakehub: FakeHub, testbed: Testbed, tiny_model_dir: Path
) -> None:
    skip_unless_the_hosts_run_this_python()  # the node's download runs the worker's python
    fakehub.add_folder("Org/Tiny", tiny_model_dir)
    python = worker_python_on(testbed.hosts[0])
    hub_queen.add_node(host_body(testbed, "far", model_source="hub", worker_python=python))
    line = last_error(download(hub_queen, "far", "hf:Org/Tiny"))
    assert_shown("[DOWNLOAD_FAILED] … ConnectError", line)
    # The queen itself reached the hub (it listed the repo); the node never did.
    assert fakehub.fetched == []


def test_an_install_path_the_login_cannot_write_matches_the_preflight_row(
    hub_queen: QueenProcess, testbed: Testbed
) -> None:
    body = host_body(testbed, "ro", install_path="/root/rbee-not-yours")
    line = add_node(hub_queen, body)
    expected = "[PREFLIGHT_FAILED] preflight install_path: ro: /root/rbee-not-yours not writable"
    assert line.startswith(expected), line
    assert line.endswith("; try: choose an --install-path the SSH user may write to"), line
    # The row shows the wrapped line whole (assert_row would unwrap it first).
    assert any(p.match(line) for p in row_patterns("[PREFLIGHT_FAILED]")), line
    assert any(p.match(line) for p in row_patterns("[…] preflight CHECK")), line
    with hub_queen.client() as client:
        error = client.post("/v2/registry/beehives/add", json=body).json()["error"]
        nodes = client.get("/v2/registry/beehives/list").json()["nodes"]
    assert error["details"]["check"] == "install_path"
    checks = [(c["name"], c["ok"]) for c in error["details"]["checks"]]
    assert checks[-1] == ("install_path", False) and all(ok for _, ok in checks[:-1])
    assert nodes == []
