"""Update files: round trip, and every way an update can be wrong is refused with a reason."""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.federated import DEFAULT_CLIP_NORM, UpdateError
from edgekit.federated.hazmat import (MAGIC, UpdateHeader, delta_norm, make_update, open_update, pack_payload,
                                     parse_update, seal)
from edgekit.federated.hazmat.update import READ_VERSIONS
from tests.fixtures.federated import SHARED, policy_for, random_delta, write_tiny_model

PRIVATE = X25519PrivateKey.generate()
PUBLIC = PRIVATE.public_key()
CLIP = 1.0  # far below random_delta(scale=1.0)'s norm (~15), so clipping shows


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.tflite")


@pytest.fixture(scope="module")
def policy(model):
    return policy_for(model, PRIVATE, clip_norm=CLIP)


@pytest.fixture(scope="module")
def update(model):
    dW, db = random_delta(np.random.default_rng(0))
    return make_update(dW, db, public_key=PUBLIC, model_fingerprint=model.fingerprint, n_examples=7, clip_norm=CLIP)


def _reason(data, policy, **kw) -> str:
    with pytest.raises(UpdateError) as e:
        open_update(data, PRIVATE, policy, **kw)
    return e.value.reason


def _forge(model, delta, **header_fields) -> bytes:
    """What a device holding the public key can send: any header, any payload."""
    header = UpdateHeader(model_fingerprint=model.fingerprint, update_id="0" * 32, n_examples=1, clip_norm=CLIP,
                          noise_multiplier=0.0, encoding="float16", shape=SHARED,
                          key_id=policy_for(model, PRIVATE).key_id)
    header = dataclasses.replace(header, **header_fields)
    raw = np.vstack([delta[0], delta[1][None]]).astype("<f2").tobytes()
    return seal(header, zlib.compress(raw), PUBLIC)


@pytest.mark.parametrize("encoding, tol", [("float16", 1e-3), ("int8", 1e-2)])
def test_round_trip_clips_and_keeps_the_values(model, policy, encoding, tol):
    dW, db = random_delta(np.random.default_rng(1), scale=1.0)  # norm ~15 -> clipped to CLIP
    data = make_update(dW, db, public_key=PUBLIC, model_fingerprint=model.fingerprint, n_examples=3,
                       clip_norm=CLIP, encoding=encoding)
    header, (gW, gb) = open_update(data, PRIVATE, policy)
    assert (header.n_examples, header.encoding, header.shape, len(header.update_id)) == (3, encoding, SHARED, 32)
    scale = CLIP / delta_norm(dW, db)
    err = delta_norm(gW - dW * scale, gb - db * scale)
    assert err < tol and delta_norm(gW, gb) <= CLIP * (1 + 1e-3)


def test_default_clip_norm_keeps_a_typical_device_update_whole(model):
    """A contribution on the bundled model has norm ~38-49: the defaults must pass it unscaled."""
    dW, db = random_delta(np.random.default_rng(8), scale=1.0)
    scale = 45.0 / delta_norm(dW, db)
    data = make_update(dW * scale, db * scale, public_key=PUBLIC, model_fingerprint=model.fingerprint, n_examples=1)
    header, (gW, gb) = open_update(data, PRIVATE, policy_for(model, PRIVATE))
    assert header.clip_norm == DEFAULT_CLIP_NORM
    assert delta_norm(gW, gb) == pytest.approx(45.0, rel=1e-3)


def test_update_ids_are_fresh_and_random(model):
    d = random_delta(np.random.default_rng(2))
    ids = {parse_update(make_update(*d, public_key=PUBLIC, model_fingerprint=model.fingerprint,
                                    n_examples=1))[0].update_id for _ in range(5)}
    assert len(ids) == 5


def test_noise_is_added_after_clipping_and_accepted(model):
    d = random_delta(np.random.default_rng(3))
    data = make_update(*d, public_key=PUBLIC, model_fingerprint=model.fingerprint, n_examples=1,
                       clip_norm=CLIP, noise_multiplier=0.5, rng=np.random.default_rng(0))
    _, (gW, gb) = open_update(data, PRIVATE, policy_for(model, PRIVATE, clip_norm=CLIP, noise_multiplier=0.5))
    dim, std = gW.size + gb.size, 0.5 * CLIP
    assert abs(np.concatenate([gW.ravel(), gb]).std() - std) < 3 * std / np.sqrt(dim) + 0.02


def test_every_changed_byte_is_detected(update, policy):
    for i in range(len(update)):
        tampered = bytearray(update)
        tampered[i] ^= 0x01
        assert _reason(bytes(tampered), policy)


def test_every_truncation_is_detected(update, policy):
    for n in range(len(update)):
        assert _reason(update[:n], policy) in ("format", "decrypt")
    assert _reason(update + b"\0", policy) == "decrypt"


def test_wrong_key_is_refused(model, update):
    other = X25519PrivateKey.generate()
    with pytest.raises(UpdateError) as e:
        open_update(update, other, policy_for(model, other, clip_norm=CLIP))
    assert e.value.reason == "wrong-key"
    # Even when the header claims the right key id, decryption fails.
    forged = dataclasses.replace(policy_for(model, other, clip_norm=CLIP), key_id=parse_update(update)[0].key_id)
    with pytest.raises(UpdateError) as e:
        open_update(update, other, forged)
    assert e.value.reason == "decrypt"


def test_replay_wrong_model_and_policy_are_refused(update, policy, tmp_path):
    header = parse_update(update)[0]
    assert _reason(update, policy, seen_ids={header.update_id}) == "replay"
    other = write_tiny_model(tmp_path / "other.tflite", seed=1)
    assert _reason(update, policy_for(other, PRIVATE, clip_norm=CLIP)) == "wrong-model"
    assert _reason(update, dataclasses.replace(policy, clip_norm=2.0)) == "policy"
    assert _reason(update, dataclasses.replace(policy, noise_multiplier=1.0)) == "policy"
    assert _reason(update, dataclasses.replace(policy, shape=(SHARED[0], SHARED[1] + 1))) == "wrong-shape"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(model, policy, bad):
    dW, db = random_delta(np.random.default_rng(4))
    dW[2, 3] = bad
    assert _reason(_forge(model, (dW, db)), policy) == "not-finite"


def test_over_norm_delta_is_refused(model, policy):
    dW, db = random_delta(np.random.default_rng(5), scale=1.0)
    assert delta_norm(dW, db) > 2 * CLIP
    assert _reason(_forge(model, (dW, db)), policy) == "over-norm"
    # The same delta passes only when the header honestly declares the matching policy.
    assert _reason(_forge(model, (dW, db), clip_norm=0.5), policy) == "policy"


def test_payload_of_wrong_size_or_bomb_is_refused(model, policy):
    header = parse_update(_forge(model, random_delta(np.random.default_rng(6))))[0]
    assert _reason(seal(header, zlib.compress(b"\0" * 10), PUBLIC), policy) == "payload"
    assert _reason(seal(header, zlib.compress(b"\0" * 10**6), PUBLIC), policy) == "payload"
    assert _reason(seal(header, b"not zlib", PUBLIC), policy) == "payload"
    assert _reason(seal(header, pack_payload(*random_delta(np.random.default_rng(6))) + b"x", PUBLIC),
                   policy) == "payload"


def test_oversized_file_and_other_versions_are_refused(update, policy):
    assert _reason(update + bytes(policy.max_file_bytes()), policy) == "too-large"
    newer = update[:8] + struct.pack(">H", READ_VERSIONS[-1] + 1) + update[10:]
    assert _reason(newer, policy) == "version"
    assert _reason(b"PK\3\4" + update[4:], policy) == "format"


def test_non_canonical_or_incomplete_header_is_refused(update):
    header, info, sealed = parse_update(update)
    body = info[14:]
    spaced = body.replace(b",", b", ", 1)
    with pytest.raises(UpdateError, match="canonical"):
        parse_update(MAGIC + struct.pack(">HI", 1, len(spaced)) + spaced + sealed)
    with pytest.raises(UpdateError, match="fields"):
        parse_update(MAGIC + struct.pack(">HI", 1, 2) + b"{}" + sealed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_fuzz_parser_only_raises_update_error(data):
    for blob in (data, MAGIC + struct.pack(">HI", 1, len(data)) + data + bytes(48)):
        try:
            parse_update(blob)
        except UpdateError:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 8), st.binary(max_size=8)), min_size=1,
                     max_size=4))
def test_fuzz_mutated_updates_are_refused_cleanly(update, policy, cuts):
    data = bytearray(update)
    for pos, drop, insert in cuts:
        pos %= len(data) + 1
        data[pos:pos + drop] = insert
    if bytes(data) == update:
        return
    with pytest.raises(UpdateError):
        open_update(bytes(data), PRIVATE, policy)


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                            max_leaves=6)


_VALID = dict(model_fingerprint="ab" * 16, update_id="cd" * 16, n_examples=3, clip_norm=1.0, noise_multiplier=0.0,
              encoding="int8", shape=[2, 3], key_id="ef" * 8, suite="X25519-HKDF-SHA256-ChaCha20Poly1305",
              compression="zlib")


@settings(max_examples=300, deadline=None)
@given(fields=st.fixed_dictionaries({k: st.just(v) | _json_values for k, v in _VALID.items()}))
def test_fuzz_header_fields_only_raise_update_error(fields):
    import json

    try:
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    except ValueError:
        return
    try:
        header = parse_update(MAGIC + struct.pack(">HI", 1, len(body)) + body + bytes(48))[0]
    except UpdateError:
        return
    assert header.to_bytes() == body
