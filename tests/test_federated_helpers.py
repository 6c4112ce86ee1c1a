"""Shared helpers for the federated tests: a tiny model file (no TensorFlow) and keys."""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edgekit.federated import UpdatePolicy, key_id
from edgekit.modelfile import ModelFile, hash_arrays, make_fingerprint, write_model_file

F, V, PERSONAL = 6, 40, 4
SHARED = (F, V - PERSONAL)


def write_tiny_model(path, seed: int = 0) -> ModelFile:
    """A model file whose head lives in ``head.npz`` (the flatbuffer part is a stub)."""
    rng = np.random.default_rng(seed)
    W, b = rng.normal(0, 1, (F, V)).astype(np.float32), rng.normal(0, 1, V).astype(np.float32)
    vocab = [f"w{i}" for i in range(V - PERSONAL)] + [f"<personal_{i}>" for i in range(PERSONAL)]
    body, head = hash_arrays([np.ones(3)]), hash_arrays([W, b])
    meta = dict(name="tiny", feature_dim=F, personal_slots=PERSONAL, body_sha256=body, head_sha256=head,
                fingerprint=make_fingerprint(body, head, vocab))
    model = ModelFile(flatbuffer=b"\0\0\0\0TFL3" + bytes(8), metadata=meta, vocab=vocab, head=(W, b))
    write_model_file(path, model)
    return model


def policy_for(model: ModelFile, private: X25519PrivateKey, **kw) -> UpdatePolicy:
    return UpdatePolicy(model_fingerprint=model.fingerprint, shape=SHARED, key_id=key_id(private.public_key()), **kw)


def random_delta(rng: np.random.Generator, scale: float = 0.05, shape=SHARED):
    return (rng.normal(0, scale, shape).astype(np.float32), rng.normal(0, scale, shape[1]).astype(np.float32))
