"""Server-side aggregation: stream over updates, refuse bad ones, combine the rest.

Memory is the ``Aggregator``'s (see ``hazmat.aggregator``): O(D) for
``fedavg`` (the default), O(D + one column block) plus 4*D bytes of disk per
update for the robust modes; and 32 bytes of id per update for replay detection.

The robust modes are unweighted on purpose: weighting by the number of
examples a device *claims* would hand the result back to an attacker. FedAvg
weights by that claim, refused over ``policy.max_examples`` and capped at
``WEIGHT_CAP_X_MEDIAN`` times the round's median claim, so that a few devices
claiming the maximum cannot outweigh the rest.

What a round survives (``benchmarks/bench_poisoning.py``): trimmed-mean, the
default, cuts ``floor(trim * n)`` values at each end of every coordinate
(``TOLERATED_FRACTION``, 30%); median just under half; fedavg none. Every
mode refuses an update over the clip norm, or with one word's row over
``policy.max_row_share`` of it.

Given a registry of enrolled device keys (``devices``), a round keeps one
update per device: each update must be signed inside its sealed payload by
an enrolled key, and the first one of a device that passes every check (in
the order given: ``edgekit aggregate`` sorts a folder by file name) counts,
later ones are refused as ``duplicate-device``. Without a registry no
identity is checked, and many updates from one party (a Sybil) count as
many devices.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .hazmat.aggregator import DEFAULT_MODE, DEFAULT_TRIM, Aggregator, add_central_noise
from .hazmat.delta import Delta, UpdateError
from .hazmat.update import (
    HEADER_PREFIX_BYTES,
    UpdateHeader,
    UpdatePolicy,
    check_header,
    open_signed_update,
    parse_header,
)

# A FedAvg weight is at most this many times the round's median claimed example count.
WEIGHT_CAP_X_MEDIAN = 2.0


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
    devices_checked: bool = False  # True: every accepted update is from a distinct enrolled device


def aggregate_updates(sources: Iterable[str | Path | bytes], private_key: X25519PrivateKey, policy: UpdatePolicy,
                      *, mode: str | None = None, trim: float = DEFAULT_TRIM, seen_ids: Iterable[str] = (),
                      workdir: str | Path | None = None, central_noise_multiplier: float = 0.0,
                      rng: np.random.Generator | None = None,
                      on_reject: Callable[[Rejection], None] | None = None,
                      devices: Mapping[str, Ed25519PublicKey] | None = None) -> AggregateResult:
    """Verify each update (files or bytes), aggregate the accepted ones, report the rest.

    An update is refused (never fatal for the batch) when it is for another
    model, key, shape or clipping policy, claims more than ``policy.max_examples``
    examples, reuses an id (from ``seen_ids`` or earlier in the batch), is not
    a regular file, fails decryption/authentication, or decodes to
    non-finite, over-norm values or a word row over the per-row bound.
    Raises ``ValueError`` only if nothing is accepted.

    ``devices`` (enrolled Ed25519 keys by ``signing.verify_key_id``, as
    ``keys.load_registry`` reads them): refuse what no enrolled device signed
    and keep one update per device (module docstring). ``None``: identities
    are not checked (``AggregateResult.devices_checked`` is False).

    ``mode`` defaults to ``DEFAULT_MODE`` (trimmed-mean), or fedavg with central noise.

    ``central_noise_multiplier`` > 0 switches to central DP: an unweighted mean
    (one clipped delta per device, sensitivity ``C``) plus noise on the sum
    (see ``add_central_noise``). It excludes local noise and robust modes.
    """
    if mode is None:
        mode = "fedavg" if central_noise_multiplier > 0 else DEFAULT_MODE
    if central_noise_multiplier > 0 and (mode != "fedavg" or policy.noise_multiplier > 0):
        raise ValueError("central noise needs mode fedavg and updates without local noise "
                         "(a median's sensitivity is not C; local noise would count twice)")
    seen, ids, rejections = set(seen_ids), [], []
    seen_devices: set[str] = set()
    examples = 0
    cap = float(policy.max_examples)
    if mode == "fedavg" and central_noise_multiplier == 0:
        sources = list(sources)
        cap = min(cap, WEIGHT_CAP_X_MEDIAN * _median_claim(sources, policy))
    with Aggregator(policy.shape, mode, trim=trim, workdir=workdir) as agg:
        for i, source in enumerate(sources):
            name = str(source) if not isinstance(source, bytes) else f"update #{i}"
            try:
                header, (dW, db), device = _open(source, private_key, policy, seen, devices, seen_devices)
            except UpdateError as e:
                rejections.append(Rejection(name, e.reason, str(e)))
                if on_reject is not None:
                    on_reject(rejections[-1])
                continue
            seen.add(header.update_id)
            if device is not None:
                seen_devices.add(device)
            ids.append(header.update_id)
            examples += header.n_examples
            agg.add(dW, db, 1.0 if central_noise_multiplier > 0 else min(float(header.n_examples), cap))
        if agg.count == 0:
            raise ValueError(f"no update accepted ({len(rejections)} rejected)")
        delta = agg.result()
    if central_noise_multiplier > 0:
        delta = add_central_noise(delta, policy.clip_norm, central_noise_multiplier, agg.count, rng)
    return AggregateResult(delta, agg.count, examples, ids, rejections, devices_checked=devices is not None)


def _open(source: str | Path | bytes, private_key: X25519PrivateKey, policy: UpdatePolicy, seen: set[str],
          devices: Mapping[str, Ed25519PublicKey] | None,
          seen_devices: set[str]) -> tuple[UpdateHeader, Delta, str | None]:
    data = source if isinstance(source, bytes) else _read_bounded(Path(source), policy.max_file_bytes())
    return open_signed_update(data, private_key, policy, seen, devices, seen_devices)


def _median_claim(sources: list[str | Path | bytes], policy: UpdatePolicy) -> float:
    """The median example count claimed by the round's headers this policy accepts (unauthenticated yet:
    a minority of claims cannot move a median beyond the honest ones); ``max_examples`` if none parses."""
    claims = []
    for source in sources:
        try:
            prefix = source[:HEADER_PREFIX_BYTES] if isinstance(source, bytes) else \
                _read_bounded(Path(source), HEADER_PREFIX_BYTES, whole=False)
            header = parse_header(prefix)
            check_header(header, policy)
        except UpdateError:
            continue
        claims.append(header.n_examples)
    return float(np.median(claims)) if claims else float(policy.max_examples)


def _read_bounded(path: Path, limit: int, whole: bool = True) -> bytes:
    """At most ``limit`` bytes of a regular file (``whole``: all of it, or ``UpdateError``).

    Opened without blocking and checked before reading: a FIFO or a device
    named like an update would otherwise hang the round or never end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise UpdateError("io", f"cannot read ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UpdateError("not-a-file", "not a regular file (a FIFO, a device or a folder); skipped")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise UpdateError("io", f"cannot read ({e.strerror})") from None
    if not whole:
        return data[:limit]
    if len(data) > limit:
        raise UpdateError("too-large", f"more than {limit} bytes, larger than any valid update")
    return data
