"""Make the next global model: old float head + aggregated delta, as a new model file.

No TensorFlow: the new head ships as the ``head.npz`` override inside the
same ``.tflite`` (see docs/design.md), with a new ``head_sha256`` and so a
new ``fingerprint`` (the model version devices and updates are bound to),
and ``parent_fingerprint`` naming the version it came from.

Only shared rows move: personal-word slot rows keep the old values, so each
device's own words mean the same after the update as before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..modelfile import ModelFile, hash_arrays, make_fingerprint, read_model_file, write_model_file
from ..runtime import read_head
from .hazmat.delta import Delta


def apply_delta(head: tuple[np.ndarray, np.ndarray], delta: Delta) -> tuple[np.ndarray, np.ndarray]:
    """``(W + dW, b + db)`` on the first ``dW.shape[1]`` (shared) vocabulary rows only."""
    W, b = (np.array(a, dtype=np.float32) for a in head)
    dW, db = delta
    shared = dW.shape[1]
    if dW.shape[0] != W.shape[0] or shared > W.shape[1] or db.shape != (shared,):
        raise ValueError(f"delta {dW.shape}/{db.shape} does not fit head {W.shape}")
    W[:, :shared] += dW
    b[:shared] += db
    return W, b


def install_delta(model_path: str | Path, delta: Delta, out_path: str | Path, *,
                  base_head: tuple[np.ndarray, np.ndarray] | None = None) -> ModelFile:
    """Write ``out_path``: the model at ``model_path`` with ``delta`` added to its head.

    ``base_head`` is the float head ``(W [F, V], b [V])`` the delta is relative
    to; by default the file's ``head.npz``, else the flatbuffer's head,
    dequantized (``runtime.read_head``). The write is atomic.
    """
    model = read_model_file(model_path)
    head = base_head if base_head is not None else read_head(model)
    new = with_head(model, apply_delta(head, delta))
    write_model_file(out_path, new)
    return new


def with_head(file: ModelFile, head: tuple[np.ndarray, np.ndarray]) -> ModelFile:
    """The same model file with another float head: a new version whose parent is ``file``."""
    W, b = (np.asarray(a, dtype=np.float32) for a in head)
    head_sha = hash_arrays([W, b])
    meta = {**file.metadata, "head_sha256": head_sha, "parent_fingerprint": file.fingerprint,
            "fingerprint": make_fingerprint(file.metadata["body_sha256"], head_sha, file.vocab)}
    return ModelFile(flatbuffer=file.flatbuffer, metadata=meta, vocab=file.vocab, head=(W, b), extras=file.extras)
