"""The recipes/hazmat split: what ``edgekit.federated`` offers is safe as it is.

``export_update`` is checked here on a plain object with the attributes it
documents (it must not need ``EdgeModel``: the federated layer sits above
the model facade and never imports it).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import edgekit.federated as federated
from edgekit.federated import export_update, hazmat
from edgekit.federated.hazmat import delta_norm, open_update
from tests.fixtures.federated import F, PERSONAL, SHARED, V, policy_for, write_tiny_model

PRIVATE = X25519PrivateKey.generate()


class Device:
    """A model as ``export_update`` sees it: a full-vocabulary head delta, its examples, its metadata."""

    def __init__(self, model, dW: np.ndarray, db: np.ndarray, n_examples: int) -> None:
        self.fingerprint = model.fingerprint
        self.metadata = {**model.metadata, "vocab_size": V}
        self.n_examples = n_examples
        self._delta = (dW, db)
        self.consumed = 0

    def head_delta(self):
        return self._delta

    def consume_contribution(self) -> None:
        self.n_examples = 0
        self.consumed += 1


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.tflite")


def test_the_top_level_has_no_primitive_that_seals_or_noises_unclipped():
    sharp = {"seal", "pack_payload", "encode_delta", "decode_delta", "add_gaussian_noise", "add_central_noise",
             "make_update", "privatize", "clip_delta", "Aggregator", "parse_update", "open_update",
             "open_signed_update"}
    assert not sharp & set(federated.__all__)
    assert not [name for name in sharp if hasattr(federated, name)]
    assert sharp <= set(hazmat.__all__)
    assert {"export_update", "aggregate_updates", "install_delta", "generate_keypair", "load_private_key",
            "load_public_key", "key_id", "UpdateError", "KeyFileError"} <= set(federated.__all__)


def test_export_update_options_are_explicit_keywords():
    params = inspect.signature(export_update).parameters
    assert [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY] == [
        "clip_norm", "noise_multiplier", "encoding", "device_key"]
    assert not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())


def test_export_clips_keeps_personal_slots_home_and_consumes(model, tmp_path):
    rng = np.random.default_rng(0)
    dW, db = rng.normal(0, 1, (F, V)).astype(np.float32), rng.normal(0, 1, V).astype(np.float32)
    dW[:, -PERSONAL:] = 1e3  # personal-word slots: personal data, must not leave the device
    device = Device(model, dW, db, n_examples=12)
    path = tmp_path / "u.edgekit-update"
    data = export_update(device, PRIVATE.public_key(), path, clip_norm=2.0, encoding="int8")
    assert path.read_bytes() == data and device.consumed == 1
    header, (gW, gb) = open_update(data, PRIVATE, policy_for(model, PRIVATE, clip_norm=2.0))
    assert (header.n_examples, header.shape, header.encoding) == (12, SHARED, "int8")
    assert delta_norm(gW, gb) == pytest.approx(2.0, rel=1e-3)
    shared = V - PERSONAL
    scale = 2.0 / delta_norm(dW[:, :shared], db[:shared])
    assert delta_norm(gW - scale * dW[:, :shared], gb - scale * db[:shared]) < 0.05
    with pytest.raises(ValueError, match="nothing to export"):
        export_update(device, PRIVATE.public_key(), tmp_path / "again.edgekit-update")
    assert device.consumed == 1 and not (tmp_path / "again.edgekit-update").exists()


def test_shared_delta_refuses_a_delta_of_another_width():
    with pytest.raises(ValueError, match="match neither"):
        hazmat.shared_delta(np.zeros((F, V - 1)), np.zeros(V - 1), V, PERSONAL)


def test_export_claims_at_most_the_examples_a_server_accepts(model):
    """A device that learned from more than DEFAULT_MAX_EXAMPLES claims the maximum: its update is not refused."""
    rng = np.random.default_rng(1)
    device = Device(model, rng.normal(0, 0.01, (F, V)).astype(np.float32),
                    rng.normal(0, 0.01, V).astype(np.float32), n_examples=50_000)
    header, _ = open_update(export_update(device, PRIVATE.public_key()), PRIVATE, policy_for(model, PRIVATE))
    assert header.n_examples == federated.DEFAULT_MAX_EXAMPLES
