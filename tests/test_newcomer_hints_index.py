"""Every row of docs/troubleshooting.md's tables has a test that produces it.

A row added to the page without a case here fails; so does a case whose test
was renamed or removed. The tests themselves live beside this file.
"""

from __future__ import annotations

import importlib

from tests.test_newcomer_hints import DOC

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
    "!! the audit log's disk": "queen:a_low_audit_disk_matches_its_row",
    "[DOWNLOAD_TIMEOUT]": "models:a_stalled_download_matches_its_row",
    # The GPU section's table: its reasons.
    "no NVIDIA driver": "gpu:each_missing_piece_matches_its_row",
    "torch is not installed": "gpu:each_missing_piece_matches_its_row",
    "torch X+cpu": "gpu:a_cuda_worker_on_a_node_without_a_usable_gpu_names_its_row",
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
