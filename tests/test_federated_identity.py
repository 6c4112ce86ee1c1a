"""Device identity on the update-file path: enrolled keys, signatures inside the sealed payload,
one update per device per round. Real keys, real HPKE and Ed25519, the tiny model fixture."""
from __future__ import annotations

import json
import os
import stat
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edgekit.cli import main
from edgekit.federated import (
    KeyFileError,
    aggregate_updates,
    device_key,
    enroll_device,
    load_registry,
)
from edgekit.federated.hazmat import make_update, open_signed_update, pack_payload, parse_update
from edgekit.federated.hazmat.update import MAGIC, SUITE
from edgekit.federated.keys import device_key_paths
from edgekit.signing import public_pem, verify_key_id
from tests.fixtures.federated import policy_for, random_delta, write_tiny_model

PRIVATE = X25519PrivateKey.generate()
PUBLIC = PRIVATE.public_key()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.tflite")


@pytest.fixture(scope="module")
def policy(model):
    return policy_for(model, PRIVATE)


def _update(model, seed: int, key: Ed25519PrivateKey | None) -> bytes:
    return make_update(*random_delta(np.random.default_rng(seed), 0.01), public_key=PUBLIC,
                       model_fingerprint=model.fingerprint, n_examples=10, device_key=key)


def _registry(tmp_path, *keys: Ed25519PrivateKey) -> dict:
    """Enroll each key's public half through the files an operator handles; return the registry as loaded."""
    registry = tmp_path / "devices.pem"
    for i, key in enumerate(keys):
        state = tmp_path / f"enroll-{i}"
        state.mkdir()
        pub = state / "device.pub"
        pub.write_bytes(public_pem(key.public_key()))
        enroll_device(pub, registry)
    return load_registry(registry)


def _reasons(result) -> list[str]:
    return [r.reason for r in result.rejections]


def _reseal(data: bytes, edit) -> bytes:
    """Decrypt with the server key, change the plaintext with ``edit``, seal it again under the same header.

    What someone who could read the payload (not the device) would do to pass
    an update off as another device's, or change it after it was signed.
    """
    _, info, sealed = parse_update(data)
    plaintext = SUITE.decrypt(sealed, PRIVATE, info=info)
    return info + SUITE.encrypt(edit(plaintext), PUBLIC, info=info)


def test_device_key_is_written_0600_atomically_and_reused(tmp_path):
    state = tmp_path / "state"
    key, created = device_key(state)
    private, public = device_key_paths(state)
    assert created and sorted(p.name for p in state.iterdir()) == ["device.key", "device.pub"]  # no temp files left
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    again, created_again = device_key(state)
    assert not created_again and verify_key_id(again.public_key()) == verify_key_id(key.public_key())
    public.unlink()  # the public half is derived again from the private one
    assert device_key(state)[0] and public.read_bytes() == public_pem(key.public_key())
    os.chmod(private, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        device_key(state)
    with pytest.raises(KeyFileError, match="no device key"):
        device_key(tmp_path / "other", create=False)


def test_enrolled_device_is_accepted_and_unenrolled_or_unsigned_refused(tmp_path, model, policy):
    enrolled, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    devices = _registry(tmp_path, enrolled)
    updates = [_update(model, 0, enrolled), _update(model, 1, stranger), _update(model, 2, None)]
    result = aggregate_updates(updates, PRIVATE, policy, devices=devices)
    assert result.accepted == 1 and result.devices_checked
    assert result.update_ids == [parse_update(updates[0])[0].update_id]
    assert _reasons(result) == ["unenrolled", "unsigned"]
    assert verify_key_id(stranger.public_key()) in result.rejections[0].message

    # Without a registry the round works as before: every well-formed update counts, unchecked.
    open_result = aggregate_updates(updates, PRIVATE, policy)
    assert open_result.accepted == 3 and not open_result.devices_checked


def test_forged_or_altered_signature_is_refused(tmp_path, model, policy):
    """The enrolled device's public key with another key's signature, or a payload changed after signing."""
    enrolled, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    devices = _registry(tmp_path, enrolled)
    assert open_signed_update(_update(model, 0, enrolled), PRIVATE, policy)[2] == verify_key_id(enrolled.public_key())
    raw_public = enrolled.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    forged = _reseal(_update(model, 1, attacker), lambda p: p[:1] + raw_public + p[33:])
    altered = _reseal(_update(model, 2, enrolled),
                      lambda p: p[:-1] + bytes([p[-1] ^ 1]))  # one bit of the compressed delta
    stripped = _reseal(_update(model, 3, enrolled), lambda p: b"\0" + p[97:])  # signature removed: anonymous
    result = aggregate_updates([forged, altered, stripped, _update(model, 4, enrolled)], PRIVATE, policy,
                               devices=devices)
    assert _reasons(result) == ["bad-signature", "bad-signature", "unsigned"] and result.accepted == 1
    # A bad signature is refused even when the round checks no identities.
    assert _reasons(aggregate_updates([forged, _update(model, 5, None)], PRIVATE, policy)) == ["bad-signature"]


def test_fifty_updates_from_one_device_count_as_one(tmp_path, model, policy):
    sybil = Ed25519PrivateKey.generate()
    honest = [Ed25519PrivateKey.generate() for _ in range(3)]
    devices = _registry(tmp_path, sybil, *honest)
    flood = [_update(model, 100 + i, sybil) for i in range(50)]
    updates = flood + [_update(model, i, k) for i, k in enumerate(honest)]
    result = aggregate_updates(updates, PRIVATE, policy, devices=devices)
    assert result.accepted == 4
    assert _reasons(result) == ["duplicate-device"] * 49
    assert parse_update(flood[0])[0].update_id in result.update_ids  # the first one given is the one kept
    assert all(parse_update(u)[0].update_id not in result.update_ids for u in flood[1:])
    # The other 49 are not in the replay ledger: they were never aggregated.
    assert len(result.update_ids) == 4


def test_old_format_update_is_refused_with_its_reason_when_a_registry_is_given(tmp_path, model, policy):
    """A v1 file (no identity block) still reads without a registry; a round that checks identities refuses it
    before decrypting."""
    header = parse_update(_update(model, 0, None))[0].to_bytes()
    info = struct.pack(">8sHI", MAGIC, 1, len(header)) + header
    v1 = info + SUITE.encrypt(pack_payload(*random_delta(np.random.default_rng(0), 0.01)), PUBLIC, info=info)
    assert aggregate_updates([v1], PRIVATE, policy).accepted == 1
    enrolled = Ed25519PrivateKey.generate()
    result = aggregate_updates([v1, _update(model, 1, enrolled)], PRIVATE, policy,
                               devices=_registry(tmp_path, enrolled))
    assert _reasons(result) == ["old-format"] and result.accepted == 1
    assert "v1 carries no device signature" in result.rejections[0].message


def test_enroll_is_idempotent_and_refuses_what_is_not_a_device_key(tmp_path):
    runner = CliRunner()
    state = tmp_path / "phone"
    shown = json.loads(runner.invoke(main, ["device-key", "--state-dir", str(state), "--json"]).output)
    assert shown["created"] and shown["public_key"] == str(state / "device.pub")
    again = json.loads(runner.invoke(main, ["device-key", "--state-dir", str(state), "-o", str(tmp_path / "my.pub"),
                                            "--json"]).output)
    assert not again["created"] and again["key_id"] == shown["key_id"]
    assert (tmp_path / "my.pub").read_bytes() == (state / "device.pub").read_bytes()

    registry = tmp_path / "devices.pem"
    first = json.loads(runner.invoke(main, ["enroll", str(state / "device.pub"), "--registry", str(registry),
                                            "--json"]).output)
    second = json.loads(runner.invoke(main, ["enroll", str(state / "device.pub"), "--registry", str(registry),
                                             "--json"]).output)
    assert first == {"key_id": shown["key_id"], "registry": str(registry), "added": True}
    assert second["added"] is False and list(load_registry(registry)) == [shown["key_id"]]

    runner.invoke(main, ["keygen", "-o", str(tmp_path / "server.key")])
    wrong = runner.invoke(main, ["enroll", str(tmp_path / "server.key.pub"), "--registry", str(registry)])
    assert wrong.exit_code != 0 and ": an X25519 public key, expected a device's Ed25519 identity key" in wrong.output


def test_cli_round_with_a_registry(trained_files, tmp_path):
    """`device-key`/`export-update` on three devices, two enrolled; one of them exports twice in the round."""
    from edgekit.model import EdgeModel
    from tests.fixtures.texts import user_lines

    def cli(*args):
        out = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return out.output

    base = trained_files["none"]
    cli("keygen", "-o", tmp_path / "server.key")
    updates = tmp_path / "updates"
    for name, seed in (("a1", 1), ("a2", 2), ("b1", 3), ("c1", 4)):
        state = tmp_path / f"device-{name[0]}"
        EdgeModel.load(base, state_dir=state, unsigned_local=True).personalize(user_lines(60, seed=seed))
        report = json.loads(cli("export-update", "--server-key", tmp_path / "server.key.pub", "-m", base,
                                "--unsigned-local", "--state-dir", state, "-o", updates / f"{name}.edgekit-update", "--clip-norm", "20",
                                "--json"))
        assert report["device"]["created"] == (name != "a2")
    for device in ("a", "b"):
        cli("enroll", tmp_path / f"device-{device}" / "device.pub", "--registry", tmp_path / "devices.pem")
    out = cli("aggregate", "--key", tmp_path / "server.key", "-m", base, updates, "-o", tmp_path / "next.tflite",
              "--clip-norm", "20", "--devices", tmp_path / "devices.pem", "--json")
    report = json.loads(out)
    assert report["accepted"] == 2 and report["devices"] == {"checked": True, "registry": str(tmp_path / "devices.pem"),
                                                    "enrolled": 2}
    assert {os.path.basename(r["source"]): r["reason"] for r in report["rejected"]} == {
        "a2.edgekit-update": "duplicate-device", "c1.edgekit-update": "unenrolled"}

    text = CliRunner().invoke(main, ["aggregate", "--key", str(tmp_path / "server.key"), "-m", str(base),
                                     str(updates), "-o", str(tmp_path / "open.tflite"), "--clip-norm", "20",
                                     "--seen-ids", str(tmp_path / "other-ledger")])
    assert text.exit_code == 0, text.output
    assert "accepted 4 of 4" in text.output and "device identities not checked" in text.output
