"""Server-side aggregation: stream over updates, refuse bad ones, combine the rest.

Memory, honestly:

- ``fedavg`` (default) keeps running float64 sums: O(D) memory for D head
  entries, whatever the number of updates (plus 32 bytes of id per update
  for replay detection).
- ``median`` and ``trimmed-mean`` need every value of a coordinate at once.
  Accepted deltas are appended as float32 rows to a file [n, D] in a temporary
  directory (4*D bytes of disk per update: about 5 MB for a 128 x 10,005
  head, 5 GB for 1,000 updates), then reduced in column blocks of at most
  ``BLOCK_BYTES``, read with seek + read (a memory map would pile the file's
  pages up in the process's RSS). RAM stays O(D + block); disk grows with n.

The robust modes are unweighted on purpose: weighting by the number of
examples a device *claims* would hand the result back to an attacker.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .delta import Delta, UpdateError, add_gaussian_noise
from .update import UpdatePolicy, open_update

MODES = ("fedavg", "median", "trimmed-mean")
DEFAULT_TRIM = 0.1
BLOCK_BYTES = 64 << 20  # RAM for one column block of the robust reduction


class Aggregator:
    """Combine deltas of one shape, one at a time (usable without any file format).

    ``workdir`` is where robust modes keep their temporary file (default: the
    system temp dir). Use as a context manager, or call ``close()``, to remove it.
    """

    def __init__(self, shape: tuple[int, int], mode: str = "fedavg", *, trim: float = DEFAULT_TRIM,
                 workdir: str | Path | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {', '.join(MODES)}")
        if not 0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.shape, self.mode, self.trim = (int(shape[0]), int(shape[1])), mode, trim
        self.dim = (self.shape[0] + 1) * self.shape[1]
        self.count, self.total_weight = 0, 0.0
        self._tmp = None
        if mode == "fedavg":
            self._sum = np.zeros(self.dim, dtype=np.float64)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-aggregate-", dir=workdir)
            self._path = Path(self._tmp.name) / "deltas.f32"
            self._file = open(self._path, "wb")

    def add(self, dW: np.ndarray, db: np.ndarray, weight: float = 1.0) -> None:
        """Add one (already validated) delta; ``weight`` counts only for ``fedavg``."""
        if dW.shape != self.shape or db.shape != (self.shape[1],):
            raise ValueError(f"delta shape {dW.shape}/{db.shape} does not match {self.shape}")
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        if self.mode == "fedavg":
            self._sum[: dW.size] += weight * dW.ravel()
            self._sum[dW.size:] += weight * db
        else:
            self._file.write(np.ascontiguousarray(dW, dtype="<f4").tobytes())
            self._file.write(np.ascontiguousarray(db, dtype="<f4").tobytes())
        self.count += 1
        self.total_weight += weight

    def result(self) -> Delta:
        """The aggregated ``(dW, db)`` (float32)."""
        if self.count == 0:
            raise ValueError("no update to aggregate")
        if self.mode == "fedavg":
            flat = (self._sum / self.total_weight).astype(np.float32)
        else:
            flat = self._robust()
        split = self.shape[0] * self.shape[1]
        return flat[:split].reshape(self.shape), flat[split:]

    def close(self) -> None:
        if self._tmp is not None:
            self._file.close()
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Aggregator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _robust(self) -> np.ndarray:
        n = self.count
        k = int(self.trim * n)
        self._file.flush()
        out = np.empty(self.dim, dtype=np.float32)
        step = max(1, BLOCK_BYTES // (4 * n))
        with open(self._path, "rb") as f:
            for start in range(0, self.dim, step):
                block = self._read_block(f, n, start, min(step, self.dim - start))
                if self.mode == "median":
                    out[start:start + step] = np.median(block, axis=0)
                else:
                    block.sort(axis=0)
                    out[start:start + step] = block[k:n - k].mean(axis=0, dtype=np.float64)
        return out

    def _read_block(self, f, n: int, start: int, width: int) -> np.ndarray:
        """Columns ``start:start+width`` of every row, by seek + read: no mapping, so RSS is this block."""
        block = np.empty((n, width), dtype="<f4")
        for i in range(n):
            f.seek(4 * (i * self.dim + start))
            if f.readinto(memoryview(block[i]).cast("B")) != 4 * width:
                raise OSError(f"{self._path}: short read (temporary file damaged?)")
        return block


@dataclass
class Rejection:
    source: str
    reason: str  # UpdateError.reason code
    message: str


@dataclass
class AggregateResult:
    delta: Delta
    accepted: int
    total_examples: int
    update_ids: list[str]  # accepted ids, to add to the replay ledger
    rejections: list[Rejection] = field(default_factory=list)


def aggregate_updates(sources: Iterable[str | Path | bytes], private_key: X25519PrivateKey, policy: UpdatePolicy,
                      *, mode: str = "fedavg", trim: float = DEFAULT_TRIM, seen_ids: Iterable[str] = (),
                      workdir: str | Path | None = None, central_noise_multiplier: float = 0.0,
                      rng: np.random.Generator | None = None,
                      on_reject: Callable[[Rejection], None] | None = None) -> AggregateResult:
    """Verify each update (files or bytes), aggregate the accepted ones, report the rest.

    An update is refused (never fatal for the batch) when it is for another
    model, key, shape or clipping policy, reuses an id (from ``seen_ids`` or
    earlier in the batch), fails decryption/authentication, or decodes to
    non-finite or over-norm values. Raises ``ValueError`` only if nothing is accepted.

    ``central_noise_multiplier`` > 0 switches to central DP: an unweighted mean
    (one clipped delta per device, sensitivity ``C``) plus noise on the sum
    (see ``add_central_noise``). It excludes local noise and robust modes.
    """
    if central_noise_multiplier > 0 and (mode != "fedavg" or policy.noise_multiplier > 0):
        raise ValueError("central noise needs mode fedavg and updates without local noise "
                         "(a median's sensitivity is not C; local noise would count twice)")
    seen, ids, rejections = set(seen_ids), [], []
    examples = 0
    with Aggregator(policy.shape, mode, trim=trim, workdir=workdir) as agg:
        for i, source in enumerate(sources):
            name = str(source) if not isinstance(source, bytes) else f"update #{i}"
            try:
                header, (dW, db) = _open(source, private_key, policy, seen)
            except UpdateError as e:
                rejections.append(Rejection(name, e.reason, str(e)))
                if on_reject is not None:
                    on_reject(rejections[-1])
                continue
            seen.add(header.update_id)
            ids.append(header.update_id)
            examples += header.n_examples
            agg.add(dW, db, 1.0 if central_noise_multiplier > 0 else policy.weight(header))
        if agg.count == 0:
            raise ValueError(f"no update accepted ({len(rejections)} rejected)")
        delta = agg.result()
    if central_noise_multiplier > 0:
        delta = add_central_noise(delta, policy.clip_norm, central_noise_multiplier, agg.count, rng)
    return AggregateResult(delta, agg.count, examples, ids, rejections)


def add_central_noise(mean: Delta, clip_norm: float, noise_multiplier: float, n: int,
                      rng: np.random.Generator | None = None) -> Delta:
    """Central DP: N(0, (z*C)^2) on the *sum* of ``n`` clipped deltas = std z*C/n on their mean.

    Valid for the unweighted mean of deltas each clipped to ``C``. ``n`` is
    treated as public (a round with a known number of participants); the
    privacy spent is ``privacy.dp_epsilon(z, sampling_rate=q, rounds=T)``.
    """
    return add_gaussian_noise(*mean, clip_norm / n, noise_multiplier, rng)


def _open(source: str | Path | bytes, private_key: X25519PrivateKey, policy: UpdatePolicy,
          seen: set[str]):
    data = source if isinstance(source, bytes) else _read_bounded(Path(source), policy.max_file_bytes())
    return open_update(data, private_key, policy, seen)


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UpdateError("io", f"cannot read ({e.strerror})") from None
    if len(data) > limit:
        raise UpdateError("too-large", f"more than {limit} bytes, larger than any valid update")
    return data
