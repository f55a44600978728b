"""Every row of docs/troubleshooting.md's tables, and every message its Models
and GPU sections quote, has a test that produces it.

A row added to the page without a case here fails; so does a case whose test
was renamed or removed. The tables' tests live beside this file. A quoted
message (a backticked text that is an error line or a sentence, not a command,
an option or a setting) is covered by the test that checks the real message
against it: found here by reading the tests, as the `doc_pattern` or
`assert_shown` call that names it inside a test function.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from tests.test_newcomer_hints import DOC, shown_text

HINTS = "tests.test_newcomer_hints"
# Row start -> "MODULE:NAME": the test test_NAME in tests/test_newcomer_hints_MODULE.py
# (tests/test_newcomer_hints.py itself where MODULE is empty).
COVERED = {
    "[SSH_KEY_NOT_FOUND]": ":add_node_rows_match_the_real_messages",
    "[HOST_KEY_UNKNOWN]": ":add_node_rows_match_the_real_messages",
    "[HOST_KEY_CHANGED]": ":a_replaced_host_key_matches_its_row",
    "[SSH_KEY_INSECURE]": ":add_node_rows_match_the_real_messages",
    "[MISSING_API_KEY]": ":token_rows_match_the_real_messages",
    "[FORBIDDEN]": "queen:a_key_that_is_not_admin_or_lacks_the_model_matches_its_row",
    "[SECRET_INVALID]": ":a_loose_token_file_matches_its_row",
    "rbee-queen: error: [INSECURE_BIND]": ":a_network_bind_without_a_token_matches_its_row",
    "[AUDIT_CHAIN_BROKEN]": "queen:an_edited_audit_entry_matches_its_row",
    "[SSH_AUTH_FAILED]": ":add_node_rows_match_the_real_messages",
    "[NODE_UNREACHABLE]": ":add_node_rows_match_the_real_messages",
    "[CONNECTION_TIMEOUT]": "queen:a_host_that_never_answers_matches_its_row",
    "[HELPER_FAILED] helper did not start": ":a_node_whose_python_cannot_run_matches_its_row",
    "[HELPER_FAILED] cannot upload": ":a_node_without_sftp_whose_python_fails_matches_its_row",
    "… permission denied": ":an_unreadable_model_matches_its_row",
    "[…] preflight CHECK": "queen:a_node_short_of_disk_matches_the_preflight_rows",
    "[PREFLIGHT_FAILED]": "queen:a_node_short_of_disk_matches_the_preflight_rows",
    "[INSTALL_FAILED]": "install:failed_installs_match_their_rows",
    "[DEPENDENCIES_MISSING]": "install:failed_installs_match_their_rows",
    "[INSTALL_IN_PROGRESS]": "install:failed_installs_match_their_rows",
    "nodes status": "workers:a_node_whose_sshd_stopped_shows_unreachable",
    "[MODEL_NOT_FOUND]": "queen:a_missing_model_folder_matches_its_row",
    "[WORKER_START_FAILED]": "workers:a_worker_python_without_its_packages_matches_its_row",
    "[LOADING_TIMEOUT]": "workers:a_load_past_the_loading_timeout_matches_its_row",
    "[QUEEN_UNAVAILABLE]": "queen:no_queen_at_a_remote_url_matches_its_row",
    "!! the database failed": "queen:a_damaged_database_matches_its_rows",
    "!! … no good backup": "queen:a_damaged_database_matches_its_rows",
    "[STORE_UNAVAILABLE]": "queen:a_held_database_lock_matches_its_row",
    "[NODE_HELD_ELSEWHERE]": "leases:two_queens_answers_and_takeovers_match_their_rows_and_figures",
    "queen … takes over": "leases:two_queens_answers_and_takeovers_match_their_rows_and_figures",
    "!! the audit log's disk": "queen:a_low_audit_disk_matches_its_row",
    "[DOWNLOAD_TIMEOUT]": "models:a_stalled_download_matches_its_row",
    # The GPU section's table: its reasons.
    "no NVIDIA driver": "gpu:each_missing_piece_matches_its_row",
    "torch is not installed": "gpu:each_missing_piece_matches_its_row",
    "torch X+cpu": "gpu:a_cuda_worker_on_a_node_without_a_usable_gpu_or_room_names_its_line",
    "GPU N was asked": "gpu:each_missing_piece_matches_its_row",
    "exllamav2 is not installed": "gpu:exllamav2_missing_or_failing_to_build_matches_its_rows",
    "torch … (CUDA …)": "gpu:this_torch_refusing_cuda_matches_its_row",
    "exllamav2's CUDA extension": "gpu:exllamav2_missing_or_failing_to_build_matches_its_rows",
}


def table_rows() -> list[str]:
    """The first cell of every table row on the page, less its opening backtick."""
    lines = DOC.read_text().splitlines()
    return [line.split(" | ")[0].removeprefix("| `") for line in lines if line.startswith("| `")]


def test_every_table_row_has_a_test_that_produces_it() -> None:
    rows = table_rows()
    assert len(rows) >= 37
    uncovered = [row for row in rows if not any(row.startswith(start) for start in COVERED)]
    assert uncovered == []
    unused = [start for start in COVERED if not any(row.startswith(start) for row in rows)]
    assert unused == []


def test_each_named_test_exists() -> None:
    for where in set(COVERED.values()):
        module, name = where.split(":")
        found = importlib.import_module(f"{HINTS}_{module}" if module else HINTS)
        assert callable(getattr(found, f"test_{name}")), where


PROSE_SECTIONS = ("## Models", "## GPU workers")
CHECKERS = {"doc_pattern", "assert_shown"}


def prose_messages() -> set[str]:
    """The messages the Models and GPU sections quote outside their tables: a
    coded line (`[CODE] …`), a line's tail (`… text`), or a sentence of four or
    more words that is not a command (`rbee-keeper …`) or an option (`--x y`)."""
    text = DOC.read_text()
    found: set[str] = set()
    for heading in PROSE_SECTIONS:
        section = text[text.index(heading) + len(heading) :].split("\n## ", 1)[0]
        prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
        for quoted in re.findall(r"`([^`]+)`", prose):
            quoted = " ".join(quoted.split())
            sentence = len(quoted.split()) >= 4 and not quoted.startswith(("rbee-keeper ", "-"))
            if quoted.startswith(("[", "… ")) or sentence:
                found.add(quoted)
    return found


def checked_in_tests() -> dict[str, list[str]]:
    """Quoted text -> the tests ("module::test") whose doc_pattern or assert_shown
    call names it, read from every test module."""
    checked: dict[str, list[str]] = {}
    for module in sorted(Path(__file__).parent.glob("test_*.py")):
        tree = ast.parse(module.read_text())
        for test in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            if test.name.startswith("test_"):
                for start in filter(None, map(_checked_start, ast.walk(test))):
                    for text in shown_text(start):
                        checked.setdefault(text, []).append(f"{module.stem}::{test.name}")
    return checked


def _checked_start(node: ast.AST) -> str | None:
    """The start a `doc_pattern("...")` or `assert_shown("...", ...)` call names."""
    if not isinstance(node, ast.Call) or getattr(node.func, "id", None) not in CHECKERS:
        return None
    first = node.args[0] if node.args else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def test_every_message_the_prose_sections_quote_is_checked_by_a_test() -> None:
    messages = prose_messages()
    # The section lines each engineer asked after: a hub the node cannot reach,
    # a copy's hash check, the RAM preflight, the flash-attn log line.
    assert {
        "[DOWNLOAD_FAILED] … ConnectError",
        "[DOWNLOAD_FAILED] … does not match its SHA-256",
        "[INSUFFICIENT_RAM]",
        "flash-attn >= 2.5.7 not found: requests run one at a time",
    } <= messages
    checked = checked_in_tests()
    assert sorted(m for m in messages if m not in checked) == []
