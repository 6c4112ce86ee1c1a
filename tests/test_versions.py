"""Model versions without TensorFlow: a new head written into the flatbuffer (checked against the float
logits in every quantization mode), Ed25519 signatures over every part of the file, the parent chain."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgekit.federated.install import float_head, float_head_path, install_delta, with_head
from edgekit.flatbuffer_head import FlatHeadError, write_head
from edgekit.installed import VersionError, check_descends
from edgekit.model import EdgeModel
from edgekit.modelfile import ModelFile, hash_arrays, read_model_file
from edgekit.runtime import Runtime, read_head
from edgekit.signing import SIGNATURE_NAME, SignatureError, sign_model, verify_model
from edgekit.vocab import Vocabulary

# Worst |logit - float logit| the interpreter may show with the new head: float files are exact; int8 and
# dynamic files round each weight to half a scale step.
TOLERANCE = {"none": 1e-4, "int8": 0.1, "dynamic": 0.05}


def nudged_head(file: ModelFile, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    W, b = read_head(file)
    rng = np.random.default_rng(seed)
    return (W + rng.normal(0, 0.1 * W.std(), W.shape).astype(np.float32),
            b + rng.normal(0, 0.1, b.shape).astype(np.float32))


@pytest.mark.parametrize("mode", ["none", "int8", "dynamic"])
def test_a_head_written_into_the_flatbuffer_gives_the_float_logits(trained_files, mode):
    file = read_model_file(trained_files[mode])
    vocab = Vocabulary(file.vocab, file.metadata["personal_slots"])
    W, b = nudged_head(file)
    runtime = Runtime(replace(file, flatbuffer=write_head(file, (W, b))), vocab)
    ids = np.random.default_rng(1).integers(5, 180, (64, file.metadata["context_length"])).astype(np.int32)
    features, logits = runtime.features_logits(ids)
    expected = features @ W + b
    assert np.abs(logits - expected).max() < TOLERANCE[mode]
    top3 = np.argsort(-logits, axis=1)[:, :3]
    best = expected.argmax(axis=1)
    assert np.mean([b in row for b, row in zip(best, top3, strict=True)]) >= 0.95  # int8 reorders only near-ties
    # Only the head's bytes changed: the body gives the same features.
    assert np.array_equal(features, Runtime(file, vocab).features_logits(ids)[0])


def test_a_head_the_flatbuffer_cannot_hold_is_refused(trained_files):
    file = read_model_file(trained_files["int8"])
    W, b = read_head(file)
    with pytest.raises(FlatHeadError, match="shape"):
        write_head(file, (W[:, :-1], b[:-1]))
    no_bias = replace(file, metadata={**file.metadata, "head": {**file.metadata["head"], "bias_tensor": None}})
    with pytest.raises(FlatHeadError, match="folded a zero bias"):
        write_head(no_bias, (W, b + 1))


def test_install_delta_ships_the_head_in_the_flatbuffer_and_keeps_the_float_head(trained_files, tmp_path):
    file = read_model_file(trained_files["int8"])
    F, V = file.metadata["feature_dim"], file.metadata["vocab_size"] - file.metadata["personal_slots"]
    delta = (np.full((F, V), 1e-4, np.float32), np.zeros(V, np.float32))  # far below one int8 step
    one = install_delta(trained_files["int8"], delta, tmp_path / "v2.tflite")
    assert one.head is None and one.metadata["head_storage"]["where"] == "flatbuffer"
    two = install_delta(tmp_path / "v2.tflite", delta, tmp_path / "v3.tflite")
    kept = float_head(tmp_path / "v3.tflite")
    assert hash_arrays(kept) == two.metadata["head_sha256"] and float_head_path(tmp_path / "v3.tflite").is_file()
    # The float copy accumulates updates that int8 rounding alone would swallow.
    assert np.allclose(kept[0][:, :V] - read_head(file)[0][:, :V], 2e-4, atol=1e-6)
    assert two.metadata["lineage"] == [one.fingerprint, file.fingerprint]
    # A device on v3 runs the interpreter's own head and ranking: no head.npz for the host to add.
    assert two.head is None and two.metadata["head_storage"]["where"] == "flatbuffer"
    v3 = EdgeModel.load(tmp_path / "v3.tflite", stateless=True, unsigned_local=True)
    assert v3.suggest("w3 w4 ", k=3) and v3.info().parents == (one.fingerprint, file.fingerprint)


def test_an_int8_head_is_always_checked_against_the_float_head(trained_files):
    """Without held-out text: read back as a device reads it, every weight within half a step of the float
    head; an outlier weight that coarsens all the others is named; a flatbuffer not holding the head is refused."""
    from edgekit.federated.install import _int8_check

    file = read_model_file(trained_files["int8"])
    W, b = nudged_head(file)
    storage = with_head(file, (W, b)).metadata["head_storage"]
    assert storage["where"] == "flatbuffer" and 0 < storage["int8_error"] < 0.02 and "warning" not in storage
    # The converter's scale is max|W| / 127, so the step grows as max|W| does.
    assert storage["int8_step_growth"] == pytest.approx(np.abs(W).max() / np.abs(read_head(file)[0]).max(), rel=1e-3)
    outlier = W.copy()
    outlier[0, 7] = 10 * np.abs(W).max()
    coarse = with_head(file, (outlier, b)).metadata["head_storage"]
    assert coarse["where"] == "flatbuffer" and coarse["int8_step_growth"] > 9 and "outlier" in coarse["warning"]
    assert coarse["int8_error"] > 5 * storage["int8_error"]
    with pytest.raises(FlatHeadError, match="steps from the float head"):  # the parent's head, not this one
        _int8_check(file, file.flatbuffer, (W, b), storage["int8_scale"])


def test_the_signature_covers_every_part(trained_files):
    key = Ed25519PrivateKey.generate()
    file = sign_model(read_model_file(trained_files["int8"]), key)
    verify_model(file, [key.public_key()])
    flat = bytearray(file.flatbuffer)
    flat[100] ^= 1
    changed = [replace(file, flatbuffer=bytes(flat)), replace(file, vocab=[*file.vocab[:-1], "x"]),
               replace(file, metadata={**file.metadata, "context_length": 5}),
               replace(file, head=read_head(file)), replace(file, extras={**file.extras, "more.txt": b"1"})]
    for other in changed:
        with pytest.raises(SignatureError, match="changed after it was signed") as e:
            verify_model(other, [key.public_key()])
        assert e.value.reason == "bad-signature"
    with pytest.raises(SignatureError, match="does not trust"):
        verify_model(file, [Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(SignatureError, match="not signed"):
        verify_model(replace(file, extras={}), [key.public_key()])
    with pytest.raises(SignatureError, match="malformed"):
        verify_model(replace(file, extras={SIGNATURE_NAME: b"{"}), [key.public_key()])


def test_descent_reasons(trained_files):
    base = read_model_file(trained_files["int8"])
    child = with_head(base, nudged_head(base, 1))
    grandchild = with_head(child, nudged_head(child, 2))
    sibling = with_head(base, nudged_head(base, 3))
    check_descends(base, grandchild, "g")  # skipping a round is fine: the chain names the installed version
    for current, new, reason in [(child, child, "same"), (grandchild, base, "older"), (child, sibling, "sibling"),
                                 (child, replace(grandchild, vocab=[*base.vocab[:-1], "x"]), "foreign")]:
        with pytest.raises(VersionError) as e:
            check_descends(current, new, "new")
        assert e.value.reason == reason
