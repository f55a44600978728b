"""docs/troubleshooting.md's `setup install` rows, produced with a real install.

A real queen pinned to this tree's wheel, a real sshd node, real venvs: an
interpreter that does not exist, a venv without the worker's packages, and a
second install of the node while the first builds its venv.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tests.plugins.queen import QueenProcess
from tests.plugins.sshd import SshServer
from tests.test_install import add_node, install
from tests.test_install import queen as queen  # noqa: F401 - the wheel-pinned queen
from tests.test_newcomer_hints import assert_row


def error_line(answer: dict[str, dict[str, str]]) -> str:
    return f"[{answer['error']['code']}] {answer['error']['message']}"


def test_failed_installs_match_their_rows(
    queen: QueenProcess,  # noqa: F811 - the imported fixture
    sshd: SshServer,
    tmp_path: Path,
) -> None:
    add_node(queen, sshd, "n1", tmp_path / "install")
    status, failed = install(queen, node_name="n1", python="/no/such/python3")
    assert status == 502
    assert_row("[INSTALL_FAILED]", error_line(failed))

    # A venv without torch takes seconds to build; a second install meanwhile
    # is refused (its interpreter is missing, so if it ran it would fail at once).
    bare = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    first: list[tuple[int, dict]] = []
    building = threading.Thread(
        target=lambda: first.append(install(queen, node_name="n1", python=bare, no_deps=True))
    )
    building.start()
    seconds: list[tuple[int, dict]] = []
    while building.is_alive() and not any(code == 409 for code, _ in seconds):
        seconds.append(install(queen, node_name="n1", python="/no/such/python3"))
    building.join()
    answers = [*first, *seconds]
    busy = next(answer for code, answer in answers if code == 409)
    assert_row("[INSTALL_IN_PROGRESS]", error_line(busy))
    if first[0][0] == 409:  # the second install took the node first: run this one again
        first[0] = install(queen, node_name="n1", python=bare, no_deps=True)
    status, missing = first[0]
    assert status == 400
    assert_row("[DEPENDENCIES_MISSING]", error_line(missing))
