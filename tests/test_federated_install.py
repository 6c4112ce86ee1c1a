"""New global model: shared head rows move, personal slots stay, new fingerprint; privacy report."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.federated import dp_epsilon, install_delta
from edgekit.federated.install import apply_delta
from edgekit.modelfile import hash_arrays, make_fingerprint, read_model_file
from tests.fixtures.federated import PERSONAL, SHARED, random_delta, write_tiny_model


def test_install_makes_a_new_version_with_parent(tmp_path):
    old = write_tiny_model(tmp_path / "m.tflite")
    delta = random_delta(np.random.default_rng(0))
    install_delta(tmp_path / "m.tflite", delta, tmp_path / "next.tflite")
    new = read_model_file(tmp_path / "next.tflite")
    W, b = new.head
    W0, b0 = old.head
    assert np.allclose(W[:, :SHARED[1]], W0[:, :SHARED[1]] + delta[0]) and np.allclose(b[:SHARED[1]],
                                                                                        b0[:SHARED[1]] + delta[1])
    assert np.array_equal(W[:, -PERSONAL:], W0[:, -PERSONAL:]) and np.array_equal(b[-PERSONAL:], b0[-PERSONAL:])
    meta = new.metadata
    assert meta["parent_fingerprint"] == old.fingerprint != meta["fingerprint"]
    assert meta["head_sha256"] == hash_arrays([W, b])
    assert meta["fingerprint"] == make_fingerprint(meta["body_sha256"], meta["head_sha256"], new.vocab)
    assert new.flatbuffer == old.flatbuffer


def test_explicit_base_head_and_shape_mismatch(tmp_path):
    write_tiny_model(tmp_path / "m.tflite")
    W0 = np.zeros((SHARED[0], SHARED[1] + PERSONAL), np.float32)
    b0 = np.zeros(SHARED[1] + PERSONAL, np.float32)
    delta = random_delta(np.random.default_rng(1))
    new = install_delta(tmp_path / "m.tflite", delta, tmp_path / "n.tflite", base_head=(W0, b0))
    assert np.allclose(new.head[0][:, :SHARED[1]], delta[0])
    with pytest.raises(ValueError, match="does not fit"):
        apply_delta((W0, b0), (np.zeros((3, 3), np.float32), np.zeros(3, np.float32)))


@pytest.mark.dp
def test_privacy_report_uses_the_accountant():
    one = dp_epsilon(1.0, delta=1e-5)
    assert 3 < one.epsilon < 6  # a single Gaussian mechanism with sigma = 1
    sampled = dp_epsilon(1.0, sampling_rate=0.01, rounds=1000, delta=1e-5)
    assert sampled.epsilon < dp_epsilon(1.0, rounds=1000, delta=1e-5).epsilon
    assert dp_epsilon(1.0, sampling_rate=0.01, rounds=100, delta=1e-5, accountant="pld").epsilon > 0
    assert math.isinf(dp_epsilon(0.0).epsilon)
    with pytest.raises(ValueError):
        dp_epsilon(1.0, sampling_rate=0)
