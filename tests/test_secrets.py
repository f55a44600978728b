"""Secret files: the mode, size and content rules, credentials, fingerprints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rbee_queen.errors import SecretInvalid
from rbee_queen.keys import KeyRing, owner_token
from rbee_queen.secrets import (
    MAX_SECRET_BYTES,
    create_secret_file,
    fingerprint,
    load_secret_file,
)

TOKEN = "s3cret-token-0123456789abcdef"


def secret(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_0600_file_with_a_trailing_newline_is_read_trimmed(tmp_path: Path) -> None:
    assert load_secret_file(secret(tmp_path, TOKEN.encode() + b"\n")) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_group_or_world_access_is_refused_with_a_chmod_hint(tmp_path: Path, mode: int) -> None:
    path = secret(tmp_path, TOKEN.encode(), mode)
    with pytest.raises(SecretInvalid) as caught:
        load_secret_file(path)
    assert f"{mode:04o}" in caught.value.message
    assert f"chmod 600 {path}" in caught.value.message
    assert TOKEN not in caught.value.message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\t \t", "empty"),
        (b"line-one\nline-two\n", "more than one line"),
        (b" padded-token", "whitespace"),
        (b"tok\x00en", "control"),
    ],
)
def test_bad_content_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    with pytest.raises(SecretInvalid, match=why):
        load_secret_file(secret(tmp_path, content))


def test_a_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretInvalid, match="1 MiB"):
        load_secret_file(secret(tmp_path, b"a" * (MAX_SECRET_BYTES + 1)))


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = secret(tmp_path, TOKEN.encode())
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SecretInvalid):
        load_secret_file(link)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SecretInvalid, match="does not exist"):
        load_secret_file(tmp_path / "nope")


def test_fingerprint_is_six_hex_of_sha256() -> None:
    # sha256("abc") = ba7816bf...
    assert fingerprint("abc") == "token:ba7816"


def test_created_token_file_is_0600_and_kept_on_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "home" / "api-token"
    first = create_secret_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(first) >= 32
    assert create_secret_file(path) == first  # an existing token is never replaced


def test_owner_token_sources_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("RBEE_API_TOKEN_FILE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("RBEE_API_TOKEN", raising=False)
    assert owner_token(home, None, create=False) is None

    monkeypatch.setenv("RBEE_API_TOKEN", "from-the-environment-123")
    with caplog.at_level(logging.WARNING):
        found = owner_token(home, None, create=False)
    assert found is not None and found.value == "from-the-environment-123"
    assert "prefer a 0600 file" in caplog.text
    assert "from-the-environment-123" not in caplog.text

    creds = tmp_path / "creds"
    creds.mkdir()
    secret(creds, b"from-systemd-credential-1\n").rename(creds / "rbee-api-token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    found = owner_token(home, None, create=False)
    assert found is not None and found.value == "from-systemd-credential-1"
    assert "systemd credential" in found.source

    explicit = secret(tmp_path, b"from-an-explicit-file-1\n")
    found = owner_token(home, explicit, create=False)
    assert found is not None and found.value == "from-an-explicit-file-1"


def test_named_keys_are_stored_as_digests_and_checked(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path, tmp_path / "owner")
    secret(tmp_path, TOKEN.encode()).rename(tmp_path / "owner")
    ring.load()
    token = ring.add("ci", admin=False, models=["file:/m/tiny"])
    stored = (tmp_path / "keys.json").read_text()
    assert token not in stored
    assert os.stat(tmp_path / "keys.json").st_mode & 0o777 == 0o600
    ci = ring.authenticate(token)
    assert ci is not None and ci.name == "ci" and not ci.admin
    assert ci.may_use("file:/m/tiny") and not ci.may_use("file:/m/other")
    owner = ring.authenticate(TOKEN)
    assert owner is not None and owner.admin and owner.may_use("file:/anything")
    assert ring.authenticate(TOKEN + "x") is None
    ring.revoke("ci")
    assert ring.authenticate(token) is None


def test_a_group_readable_keys_file_is_refused(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    ring.load()
    ring.add("ci", admin=False, models=None)
    (tmp_path / "keys.json").chmod(0o640)
    with pytest.raises(SecretInvalid, match="chmod 600"):
        ring.load()
