"""Head-delta math shared by every transport: clip, noise, encode, validate.

Nothing here knows about files or encryption, so a Flower client/strategy
(or any other transport) applies exactly the same rules as ``edgekit
export-update`` / ``edgekit aggregate``. Each function does one step and
trusts its caller for the others: ``encode_delta`` neither clips nor checks
that personal-word slots are gone, ``add_gaussian_noise`` does not clip.

A delta is the pair ``(dW [F, V], db [V])`` of the shared head; its norm is
the L2 norm of both together (one clipping bound per user, the DP-FedAvg
recipe of McMahan et al. 2018: clip to ``C``, then add N(0, (z*C)^2) noise to
every coordinate).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import UpdateError

ENCODINGS = ("float16", "int8")
DEFAULT_ENCODING = "float16"
# Sized to clip only outliers: one `edgekit personalize` on the bundled model moves the
# shared head by an L2 norm of 38-49 (median ~46, measured on 500-8,000 words of SMS;
# it saturates, more text hardly raises it). A bound far below that would shrink every
# honest update and leave the global model where it was.
DEFAULT_CLIP_NORM = 50.0
# Slack on the server's norm check: float16 rounding (at most 2^-11 relative)
# and summation order. An attacker gains 0.1% of C from it, nothing more.
NORM_RTOL = 1e-3
# ||N(0, I_D)|| <= sqrt(D) + t with probability >= 1 - exp(-t^2/2) (Laurent-Massart);
# t = 8 means an honest noisy update is wrongly refused about once in 10^14.
NOISE_TAIL = 8.0
# One word's row (its dW column and bias, F+1 values) may carry at most this share of the
# clip norm. Honest personalizations spread their change: on 20 SMS devices the largest
# row held 3.5-4.9% of the clip norm (benchmarks/bench_poisoning.py). A hostile update
# that puts its whole norm on one word (the cheapest way to make it a first suggestion)
# is refused; one that keeps every row under the bound must spread its norm over at least
# 1/share^2 = 100 words, and is left to the robust modes.
DEFAULT_MAX_ROW_SHARE = 0.1
# In a small vocabulary an even spread alone puts C/sqrt(V) on every row: the bound is never
# below ROW_SPREAD_FLOOR times that (it governs below 1,600 shared words; the bundled model has 10,005).
ROW_SPREAD_FLOOR = 4.0

Delta = tuple[np.ndarray, np.ndarray]


def delta_norm(dW: np.ndarray, db: np.ndarray) -> float:
    """L2 norm of ``(dW, db)`` together; NaN or inf if a value is not finite.

    A float32 BLAS dot: about 1e-6 relative error, far inside ``NORM_RTOL``, and
    several times faster than float64 on the server's hot path.
    """
    total = 0.0
    for a in (dW, db):
        flat = np.ascontiguousarray(a, dtype=np.float32).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def shared_delta(dW: np.ndarray, db: np.ndarray, vocab_size: int, personal_slots: int) -> Delta:
    """The shared rows of a head delta: personal-word slots are personal data and never leave the device.

    Takes a full-vocabulary delta ``[F, vocab_size]`` (cut here) or one that
    already has only the shared rows (returned as is); any other width is an error.
    """
    shared = vocab_size - personal_slots
    if dW.shape[-1] not in (shared, vocab_size) or db.shape[-1] != dW.shape[-1]:
        raise ValueError(f"delta shapes {dW.shape}, {db.shape} match neither the vocabulary ({vocab_size}) "
                         f"nor its shared part ({shared})")
    return dW[:, :shared], db[:shared]


def clip_delta(dW: np.ndarray, db: np.ndarray, clip_norm: float) -> Delta:
    """Scale ``(dW, db)`` down so that its joint L2 norm is at most ``clip_norm``."""
    _check_clip_norm(clip_norm)
    dW, db = np.asarray(dW, dtype=np.float32), np.asarray(db, dtype=np.float32)
    norm = delta_norm(dW, db)
    if norm <= clip_norm:
        return dW.copy(), db.copy()
    factor = np.float32(clip_norm / norm)
    return dW * factor, db * factor


def add_gaussian_noise(dW: np.ndarray, db: np.ndarray, clip_norm: float, noise_multiplier: float,
                       rng: np.random.Generator | None = None) -> Delta:
    """Add N(0, (noise_multiplier * clip_norm)^2) to every coordinate; it does not clip.

    Noise calibrated to ``clip_norm`` protects nothing unless the delta was
    clipped to it first: ``privatize`` does both.
    ``rng`` defaults to a fresh OS-seeded generator; pass one only in tests
    (a predictable seed on a device would make the noise removable).
    """
    _check_noise(noise_multiplier)
    if noise_multiplier == 0:
        return dW, db
    rng = rng if rng is not None else np.random.default_rng()
    std = noise_multiplier * clip_norm
    return (dW + rng.normal(0.0, std, dW.shape).astype(np.float32),
            db + rng.normal(0.0, std, db.shape).astype(np.float32))


def privatize(dW: np.ndarray, db: np.ndarray, clip_norm: float = DEFAULT_CLIP_NORM,
              noise_multiplier: float = 0.0, rng: np.random.Generator | None = None) -> Delta:
    """Clip to ``clip_norm``, then add Gaussian noise: what a device sends."""
    dW, db = clip_delta(dW, db, clip_norm)
    return add_gaussian_noise(dW, db, clip_norm, noise_multiplier, rng)


def norm_bound(clip_norm: float, noise_multiplier: float, dim: int) -> float:
    """Largest norm an honest update can have: ``C``, plus the noise's high-probability bound.

    With local noise the server cannot enforce ``C`` itself (the noise dominates the
    norm); it can only refuse deltas bigger than clipping plus noise could produce.
    """
    return clip_norm + noise_multiplier * clip_norm * (math.sqrt(dim) + NOISE_TAIL)


def validate_delta(dW: np.ndarray, db: np.ndarray, *, clip_norm: float, noise_multiplier: float = 0.0) -> float:
    """Refuse a non-finite or over-norm delta (``UpdateError``); return its norm."""
    norm = delta_norm(dW, db)
    if not math.isfinite(norm):  # one pass in the common case; find the culprit only when needed
        for name, a in (("weight", dW), ("bias", db)):
            if not np.isfinite(a).all():
                raise UpdateError("not-finite", f"the {name} delta has NaN or infinite values")
    limit = norm_bound(clip_norm, noise_multiplier, dW.size + db.size)
    if norm > limit * (1 + NORM_RTOL):
        raise UpdateError("over-norm", f"delta norm {norm:.6g} exceeds the bound {limit:.6g} "
                          f"(clip norm {clip_norm:g}, noise multiplier {noise_multiplier:g})")
    return norm


def row_norm_bound(clip_norm: float, noise_multiplier: float, shape: tuple[int, int],
                   max_row_share: float = DEFAULT_MAX_ROW_SHARE) -> float:
    """Largest norm an honest update's single word row can have, for a shared head of ``shape = (F, V)``.

    ``max(max_row_share, ROW_SPREAD_FLOOR / sqrt(V)) * C``, plus, with local
    noise, the noise's high-probability bound on a row's ``F + 1``
    coordinates (as ``norm_bound`` for the whole delta).
    """
    share = max(max_row_share, ROW_SPREAD_FLOOR / math.sqrt(shape[1]))
    return share * clip_norm + noise_multiplier * clip_norm * (math.sqrt(shape[0] + 1) + NOISE_TAIL)


def validate_rows(dW: np.ndarray, db: np.ndarray, *, clip_norm: float, noise_multiplier: float = 0.0,
                  max_row_share: float = DEFAULT_MAX_ROW_SHARE) -> float:
    """Refuse a delta one of whose word rows is over ``row_norm_bound`` (``UpdateError``); return the largest.

    A per-word bound, beside the whole delta's: without it one update may
    spend its entire clip norm on one word and, averaged with honest ones,
    still move that word further than all of them together.
    """
    rows = np.einsum("ij,ij->j", dW, dW, dtype=np.float64) + db.astype(np.float64) ** 2
    worst = int(np.argmax(rows))
    largest = math.sqrt(float(rows[worst]))
    limit = row_norm_bound(clip_norm, noise_multiplier, dW.shape, max_row_share)
    if largest > limit * (1 + NORM_RTOL):
        raise UpdateError("row-norm", f"the row of word {worst} has norm {largest:.6g}, over the per-word bound "
                          f"{limit:.6g} (clip norm {clip_norm:g}): one update may not spend its norm on a few words")
    return largest


def encode_delta(dW: np.ndarray, db: np.ndarray, encoding: str = DEFAULT_ENCODING,
                 max_norm: float | None = None) -> bytes:
    """Compact little-endian bytes of ``(dW, db)``, as given: it does not clip.

    Layout: the rows of ``M = [dW; db]`` (shape [F+1, V]).
    ``float16``: M as float16 (round to nearest: at most 2^-11 relative error,
    inside the server's ``NORM_RTOL``). ``int8``: V float32 scales, one per
    vocabulary word (a row of the interpreter's [V, F] head, like per-channel
    quantization), then M as int8, symmetric (scale = max|column| / 127, round
    to nearest). Per-word scales follow the heavy tail of a personal delta (a
    few words move a lot); one scale per feature row cost 10x the error.
    Int8 rounding can raise the norm by more than ``NORM_RTOL``; with
    ``max_norm`` the scales are shrunk (exactly, the integers stay) so that the
    decoded delta is within it and the server does not refuse it.
    """
    m = _stack(dW, db)
    if encoding == "float16":
        if np.abs(m).max(initial=0.0) > np.finfo(np.float16).max:
            raise ValueError("delta values exceed the float16 range; use a smaller clip norm or int8")
        return m.astype("<f2").tobytes()
    if encoding == "int8":
        return _encode_int8(m, max_norm)
    raise ValueError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def decode_delta(data: bytes, shape: tuple[int, int], encoding: str) -> Delta:
    """Inverse of ``encode_delta`` for a shared head of ``shape = (F, V)``; float32 arrays."""
    rows, cols = shape[0] + 1, shape[1]
    if len(data) != encoded_size(shape, encoding):
        raise UpdateError("payload", f"payload is {len(data)} bytes, {encoded_size(shape, encoding)} expected "
                          f"for a {shape[0]}x{shape[1]} {encoding} delta")
    if encoding == "float16":
        m = np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(rows, cols)
    else:
        scales = np.frombuffer(data, dtype="<f4", count=cols)
        q = np.frombuffer(data, dtype=np.int8, offset=4 * cols).reshape(rows, cols)
        m = q.astype(np.float32) * scales.astype(np.float32)
    return m[:-1], m[-1]


def encoded_size(shape: tuple[int, int], encoding: str) -> int:
    """Bytes of an uncompressed encoded delta: fixed by shape, so the server can bound input."""
    rows, cols = shape[0] + 1, shape[1]
    if encoding == "float16":
        return 2 * rows * cols
    if encoding == "int8":
        return 4 * cols + rows * cols
    raise UpdateError("format", f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def _encode_int8(m: np.ndarray, max_norm: float | None) -> bytes:
    scales = (np.abs(m).max(axis=0) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    q = np.clip(np.rint(m / safe), -127, 127).astype(np.int8)
    if max_norm is not None:
        q64 = q.astype(np.float64)
        norm = math.sqrt(float(np.einsum("ij,ij->j", q64, q64) @ (scales.astype(np.float64) ** 2)))
        if norm > max_norm:
            scales = (scales * (max_norm / norm)).astype(np.float32)
    return scales.astype("<f4").tobytes() + q.tobytes()


def _stack(dW: np.ndarray, db: np.ndarray) -> np.ndarray:
    dW, db = np.asarray(dW, dtype=np.float32), np.asarray(db, dtype=np.float32)
    if dW.ndim != 2 or db.shape != (dW.shape[1],):
        raise ValueError(f"expected dW [F, V] and db [V], got {dW.shape} and {db.shape}")
    if not (np.isfinite(dW).all() and np.isfinite(db).all()):
        raise ValueError("the delta has NaN or infinite values; refusing to export it")
    return np.vstack([dW, db[None, :]])


def _check_clip_norm(clip_norm: float) -> None:
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip norm must be a positive finite number, got {clip_norm!r}")


def _check_noise(noise_multiplier: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise multiplier must be >= 0 and finite, got {noise_multiplier!r}")
