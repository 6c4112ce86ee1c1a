"""Server keys: 0600 private file, optional passphrase, clear errors."""
from __future__ import annotations

import os
import stat

import pytest

from edgekit.federated.keys import KeyFileError, generate_keypair, key_id, load_private_key, load_public_key


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_writes_0600_private_and_loadable_public(tmp_path):
    public = generate_keypair(tmp_path / "server.key")
    assert _mode(tmp_path / "server.key") == 0o600
    assert key_id(load_public_key(tmp_path / "server.key.pub")) == key_id(public)
    assert key_id(load_private_key(tmp_path / "server.key").public_key()) == key_id(public)


def test_passphrase_protects_the_private_key(tmp_path):
    generate_keypair(tmp_path / "k", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "k").read_bytes()
    load_private_key(tmp_path / "k", b"correct horse")
    with pytest.raises(KeyFileError, match="passphrase"):
        load_private_key(tmp_path / "k")
    with pytest.raises(KeyFileError, match="passphrase is wrong"):
        load_private_key(tmp_path / "k", b"wrong")


def test_existing_key_is_not_replaced_without_overwrite(tmp_path):
    first = generate_keypair(tmp_path / "k")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(tmp_path / "k")
    assert key_id(load_private_key(tmp_path / "k").public_key()) == key_id(first)
    assert key_id(generate_keypair(tmp_path / "k", overwrite=True)) != key_id(first)


def test_private_key_readable_by_others_is_refused(tmp_path):
    generate_keypair(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(tmp_path / "k")


def test_wrong_files_give_clear_errors(tmp_path):
    generate_keypair(tmp_path / "k")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "k")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk").write_bytes(b"junk")
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_private_key(tmp_path / "junk")


def test_empty_passphrase_is_an_error_not_an_unencrypted_key(tmp_path):
    with pytest.raises(KeyFileError, match="empty passphrase"):
        generate_keypair(tmp_path / "k", passphrase=b"")
    assert not (tmp_path / "k").exists()
