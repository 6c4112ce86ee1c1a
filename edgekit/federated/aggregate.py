"""Server-side aggregation: stream over updates, refuse bad ones, combine the rest.

Memory is the ``Aggregator``'s (see ``hazmat.aggregator``): O(D) for
``fedavg`` (the default), O(D + one column block) plus 4*D bytes of disk per
update for the robust modes; and 32 bytes of id per update for replay detection.

The robust modes are unweighted on purpose: weighting by the number of
examples a device *claims* would hand the result back to an attacker.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .hazmat.aggregator import DEFAULT_TRIM, Aggregator, add_central_noise
from .hazmat.delta import Delta, UpdateError
from .hazmat.update import UpdateHeader, UpdatePolicy, open_update


@dataclass
class Rejection:
    """One refused update: refusals never stop a batch, so the caller gets a list of these."""

    source: str
    reason: str  # UpdateError.reason code
    message: str


@dataclass
class AggregateResult:
    """The combined delta and what went into it (``install_delta`` turns ``delta`` into a model version)."""

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


def _open(source: str | Path | bytes, private_key: X25519PrivateKey, policy: UpdatePolicy,
          seen: set[str]) -> tuple[UpdateHeader, Delta]:
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
