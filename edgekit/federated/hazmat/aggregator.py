"""Combine head deltas of one shape: weighted FedAvg, coordinate-wise median, trimmed mean.

``Aggregator`` works on arrays it is handed and trusts them: it checks their
shape, nothing else (no norm, no finiteness, no replay, no cap on a weight).
``edgekit.federated.aggregate_updates`` puts each update through
``open_update``'s checks first; another transport must run ``validate_delta``
on every delta before ``add``.

Memory, honestly:

- ``fedavg`` keeps running float64 sums: O(D) memory for D head entries,
  whatever the number of deltas.
- ``median`` and ``trimmed-mean`` need every value of a coordinate at once.
  Deltas are appended as float32 rows to a file [n, D] in a temporary
  directory (4*D bytes of disk per update: about 5 MB for a 128 x 10,005
  head, 5 GB for 1,000 updates), then reduced in column blocks of at most
  ``BLOCK_BYTES``, read with seek + read (a memory map would pile the file's
  pages up in the process's RSS). RAM stays O(D + block); disk grows with n.

The temporary rows are decrypted device deltas: the folder is 0700 (its name
carries the process id), the file 0600, both removed by ``close()``; a
folder left by a killed process (``kill -9``) is removed by the next
``Aggregator`` that uses the same parent folder. Removal on SIGTERM needs the
program to turn the signal into an exception (``edgekit aggregate`` does).
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .delta import Delta, add_gaussian_noise

MODES = ("fedavg", "median", "trimmed-mean")
# The share of hostile updates a round is built to survive: trimmed-mean's default trim
# cuts floor(TOLERATED_FRACTION * n) values at each end of every coordinate, so up to that
# many hostile updates are all cut, wherever they push (median survives just under half).
# FedAvg tolerates none: one update moves the mean by up to clip_norm / n.
TOLERATED_FRACTION = 0.3
DEFAULT_TRIM = TOLERATED_FRACTION
DEFAULT_MODE = "trimmed-mean"
TEMP_PREFIX = "edgekit-aggregate-"
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
            remove_stale_folders(workdir)
            self._tmp = tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=workdir)  # 0700
            self._path = Path(self._tmp.name) / "deltas.f32"
            self._file = os.fdopen(os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

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

    def __exit__(self, *exc: object) -> None:
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

    def _read_block(self, f: io.BufferedReader, n: int, start: int, width: int) -> np.ndarray:
        """Columns ``start:start+width`` of every row, by seek + read: no mapping, so RSS is this block."""
        block = np.empty((n, width), dtype="<f4")
        for i in range(n):
            f.seek(4 * (i * self.dim + start))
            if f.readinto(memoryview(block[i]).cast("B")) != 4 * width:
                raise OSError(f"{self._path}: short read (temporary file damaged?)")
        return block


def remove_stale_folders(workdir: str | Path | None = None) -> list[Path]:
    """Remove this user's ``Aggregator`` folders whose process is gone (killed mid-round); return them.

    Only folders named by a process id that no longer runs: a live
    aggregation's folder, or another user's, is never touched.
    """
    parent = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    removed = []
    for folder in parent.glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or folder.is_symlink() or folder.stat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def add_central_noise(mean: Delta, clip_norm: float, central_noise_multiplier: float, n: int,
                      rng: np.random.Generator | None = None) -> Delta:
    """Central DP: N(0, (z*C)^2) on the *sum* of ``n`` clipped deltas = std z*C/n on their mean.

    Valid only for the unweighted mean of deltas each clipped to ``C`` (it
    clips nothing itself). ``n`` is treated as public (a round with a known
    number of participants); the privacy spent is
    ``privacy.dp_epsilon(z, sampling_rate=q, rounds=T)``.
    """
    return add_gaussian_noise(*mean, clip_norm / n, central_noise_multiplier, rng)
