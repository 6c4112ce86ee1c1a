"""Make the next global model: old float head + aggregated delta, as a new, signed model file.

No TensorFlow: the new head is written into the flatbuffer itself
(``edgekit.flatbuffer_head``), so a device runs the new version at the bundled file's
speed. The version gets a new ``head_sha256`` and so a new ``fingerprint``
(the model version devices and updates are bound to), ``parent_fingerprint``
naming the version it came from, and ``lineage``, its ancestors newest
first, which a device checks before it installs a version (``edgekit.installed``).

The server keeps the float head beside the file (``<stem>.float-head.npz``,
checked against ``head_sha256``): the next round adds its delta to that, not
to the int8 head, so rounding never swallows small updates round after round.

The head ships as ``head.npz`` instead (the fallback, slower on devices) only
when the flatbuffer cannot hold it: a file whose head already lives in
``head.npz``, a zero bias the converter folded away while the new head has
one, or a head tensor of a kind ``edgekit.flatbuffer_head`` does not write.

Only shared rows move: personal-word slot rows keep the old values, so each
device's own words mean the same after the update as before.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..atomic import atomic_write_bytes
from ..flatbuffer_head import (
    INT8_MAX,
    FlatHeadError,
    default_int8_scale,
    per_tensor_int8,
    per_tensor_int8_scale,
    write_head,
)
from ..head import Weights
from ..installed import lineage
from ..metrics import evaluate
from ..modelfile import ModelFile, hash_arrays, make_fingerprint, read_model_file, write_model_file
from ..personal.train import softmax
from ..runtime import Runtime, read_head
from ..signing import sign_model
from ..tokenizer import Tokenizer, TokenizerConfig
from ..vocab import Vocabulary
from .hazmat.delta import Delta

LINEAGE_MAX = 64  # ancestors a version names: a device that missed more rounds installs from a fresh download
INT8_TOLERANCE = 0.002  # the int8 head may lose at most 0.2 points of top-3 against its float head
SCALE_FACTORS = (1.0, 0.9, 0.8, 0.7, 0.6)  # int8 scales tried, as fractions of max|W| / 127
CHECK_TARGETS = 20_000
INT8_STEP_GROWTH = 2.0  # an int8 step more than twice the parent's is worth a warning (``_int8_check``)


def apply_delta(head: Weights, delta: Delta) -> Weights:
    """``(W + dW, b + db)`` on the first ``dW.shape[1]`` (shared) vocabulary rows only."""
    W, b = (np.array(a, dtype=np.float32) for a in head)
    dW, db = delta
    shared = dW.shape[1]
    if dW.shape[0] != W.shape[0] or shared > W.shape[1] or db.shape != (shared,):
        raise ValueError(f"delta {dW.shape}/{db.shape} does not fit head {W.shape}")
    W[:, :shared] += dW
    b[:shared] += db
    return W, b


def install_delta(model_path: str | Path, delta: Delta, out_path: str | Path, *, base_head: Weights | None = None,
                  signing_key: Ed25519PrivateKey | None = None, heldout: Iterable[str] | None = None) -> ModelFile:
    """Write ``out_path``: the model at ``model_path`` with ``delta`` added to its head.

    ``base_head`` is the float head ``(W [F, V], b [V])`` the delta is relative
    to; by default ``float_head(model_path)``. ``signing_key`` signs the
    version (``edgekit aggregate`` always does). ``heldout`` text lines let an
    int8 file's head scale be checked (and chosen) against the float head;
    the result is in the metadata's ``head_storage``. The writes are atomic.
    """
    model = read_model_file(model_path)
    head = apply_delta(base_head if base_head is not None else float_head(model_path, model), delta)
    new = with_head(model, head, heldout)
    if signing_key is not None:
        sign_model(new, signing_key)
    write_model_file(out_path, new)
    buf = io.BytesIO()
    np.savez(buf, weight=head[0], bias=head[1])
    atomic_write_bytes(float_head_path(out_path), buf.getvalue())
    return new


def float_head_path(model_path: str | Path) -> Path:
    """Where the server keeps a version's float head: ``<stem>.float-head.npz`` beside the model file."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.float-head.npz")


def float_head(model_path: str | Path, model: ModelFile | None = None) -> Weights:
    """A version's float head: the server's copy when it matches the version, else the file's own head."""
    model = model or read_model_file(model_path)
    path = float_head_path(model_path)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            head = z["weight"].astype(np.float32), z["bias"].astype(np.float32)
        if hash_arrays(head) == model.metadata.get("head_sha256"):
            return head
    return read_head(model)


def with_head(file: ModelFile, head: Weights, heldout: Iterable[str] | None = None) -> ModelFile:
    """``file`` with another float head: a new version whose parent is ``file``, its head in the flatbuffer."""
    W, b = (np.asarray(a, dtype=np.float32) for a in head)
    head_sha = hash_arrays([W, b])
    meta = {**file.metadata, "head_sha256": head_sha, "parent_fingerprint": file.fingerprint,
            "lineage": [file.fingerprint, *lineage(file)][:LINEAGE_MAX],
            "fingerprint": make_fingerprint(file.metadata["body_sha256"], head_sha, file.vocab)}
    if file.head is None:
        try:
            flat, storage = _flat_head(file, (W, b), heldout)
            return ModelFile(flatbuffer=flat, metadata={**meta, "head_storage": storage}, vocab=file.vocab,
                             extras=file.extras)
        except FlatHeadError as e:
            reason = str(e)
    else:
        reason = "the parent's head already ships as head.npz"
    meta["head_storage"] = {"where": "head.npz", "why": reason}
    return ModelFile(flatbuffer=file.flatbuffer, metadata=meta, vocab=file.vocab, head=(W, b), extras=file.extras)


def _flat_head(file: ModelFile, head: Weights, heldout: Iterable[str] | None) -> tuple[bytes, dict]:
    """The flatbuffer with ``head`` written in; for a per-tensor int8 head, its scale checked (``_int8_check``)
    always, and chosen on ``heldout`` text when there is some."""
    if not per_tensor_int8(file):
        return write_head(file, head), {"where": "flatbuffer"}
    if heldout is None:  # the converter's choice, max-abs
        flat = write_head(file, head)
        return flat, {"where": "flatbuffer", **_int8_check(file, flat, head, default_int8_scale(head[0]))}
    vocab = Vocabulary(file.vocab, file.metadata.get("personal_slots", 0))
    lines = list(Tokenizer(TokenizerConfig.from_dict(file.metadata["tokenizer"])).iter_lines(heldout))
    T = int(file.metadata["context_length"])
    W, b = head
    base = default_int8_scale(W)
    reference: float | None = None
    tried: list[tuple[float, float, bytes]] = []
    for factor in SCALE_FACTORS:
        flat = write_head(file, head, base * factor)
        runtime = Runtime(replace(file, flatbuffer=flat, head=None), vocab)
        if reference is None:  # the float head on the same (int8) body's features
            reference = _top3(_float_scorer(runtime, W, b), vocab, lines, T)
        top3 = _top3(_interpreter_scorer(runtime), vocab, lines, T)
        tried.append((top3, factor, flat))
        if reference - top3 <= INT8_TOLERANCE:
            break
    top3, factor, flat = max(tried, key=lambda t: t[0])
    return flat, {"where": "flatbuffer", **_int8_check(file, flat, head, base * factor),
                  "float_top3": round(reference or 0.0, 4), "int8_top3": round(top3, 4), "scales_tried": len(tried)}


def _int8_check(file: ModelFile, flat: bytes, head: Weights, scale: float) -> dict:
    """The int8 head as a device will read it (LiteRT, from ``flat``), against the float head; no text needed.

    Every weight must be within half a step of its float value (clipped to
    the int8 range at ``scale``): anything else is a wrong write, and raises
    ``FlatHeadError`` (the head then ships as ``head.npz``). Returned for
    ``head_storage``: the scale, the relative error ``|Wq - W| / |W|`` (about
    1% for the bundled head), and the step against the parent's. A step more
    than ``INT8_STEP_GROWTH`` times the parent's means one weight grew far
    beyond the rest (an outlier in an update) and every other weight lost that
    much resolution: a ``warning`` says so, which ``--heldout`` settles.
    """
    W = np.asarray(head[0], np.float32)
    Wq = read_head(ModelFile(flatbuffer=flat, metadata=file.metadata, vocab=file.vocab))[0]
    worst = float(np.abs(Wq - np.clip(W, -INT8_MAX * scale, INT8_MAX * scale)).max()) / scale
    if worst > 0.5 + 1e-3:
        raise FlatHeadError(f"the int8 head read back from the new flatbuffer is {worst:.2f} steps from the float "
                            "head (at most half a step when written right)")
    growth = scale / (per_tensor_int8_scale(file) or scale)
    error = float(np.linalg.norm(Wq - W) / (np.linalg.norm(W) or 1.0))
    check: dict[str, float | str] = {"int8_scale": scale, "int8_error": round(error, 5),
                                     "int8_step_growth": round(growth, 3)}
    if growth > INT8_STEP_GROWTH:
        check["warning"] = (f"the int8 step is {growth:.1f}x the parent's (max |W| {INT8_MAX * scale:.3g}): every head "
                            "weight lost that much resolution; look for an outlier update, and check the scale with "
                            "--heldout")
    return check


def _float_scorer(runtime: Runtime, W: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda ids: softmax(runtime.features_logits(ids)[0] @ W + b)


def _interpreter_scorer(runtime: Runtime) -> Callable[[np.ndarray], np.ndarray]:
    return lambda ids: softmax(runtime.features_logits(ids)[1].astype(np.float32))


def _top3(scorer: Callable[[np.ndarray], np.ndarray], vocab: Vocabulary, lines: list[list[str]], T: int) -> float:
    return evaluate(scorer, vocab, lines, T, CHECK_TARGETS).top3
