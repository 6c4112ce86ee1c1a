"""Privacy spent by noisy updates, as (epsilon, delta), from Google's dp-accounting.

The mechanism is the DP-FedAvg one: each participating device's head delta is
clipped to L2 norm ``C`` and gets N(0, (z*C)^2) noise per coordinate. One
round is a Gaussian mechanism with noise multiplier ``z`` (add/remove one
user's whole contribution), Poisson-sampled at ``sampling_rate``; ``rounds``
of them compose. We never hand-roll the bound: the accountant (RDP by
default, PLD for tighter numbers) does it.

What the number protects against depends on ``sampling_rate``: with local
(device-side) noise the server sees each update it receives, so the
guarantee *against the server* is ``sampling_rate=1`` and ``rounds`` = the
rounds a device took part in. Against anyone who only sees the released
models, sampling amplification applies (use the real per-round sampling rate).

A server with central DP (a Flower run, or ``edgekit aggregate
--central-noise-multiplier``) keeps a *ledger* beside each model version it
writes (``round-003.privacy.json`` next to ``round-003.tflite``): epsilon at
the run's delta for that round and over all rounds so far.
``read_ledger`` / ``describe_ledger`` give it back (``edgekit info``);
``next_ledger`` carries the parent version's ledger one round on.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

ACCOUNTANTS = ("rdp", "pld")
DEFAULT_DELTA = 1e-6


@dataclass(frozen=True)
class PrivacyReport:
    epsilon: float
    delta: float
    noise_multiplier: float
    sampling_rate: float
    rounds: int
    accountant: str

    def to_dict(self) -> dict:
        return asdict(self)


def dp_epsilon(noise_multiplier: float, *, sampling_rate: float = 1.0, rounds: int = 1,
               delta: float = DEFAULT_DELTA, accountant: str = "rdp") -> PrivacyReport:
    """Epsilon at ``delta`` for ``rounds`` Poisson-sampled Gaussian rounds; ``inf`` without noise."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
    if not (0 < sampling_rate <= 1 and rounds >= 1 and 0 < delta < 1 and noise_multiplier >= 0):
        raise ValueError("need 0 < sampling_rate <= 1, rounds >= 1, 0 < delta < 1, noise_multiplier >= 0")
    report = PrivacyReport(epsilon=math.inf, delta=delta, noise_multiplier=noise_multiplier,
                           sampling_rate=sampling_rate, rounds=rounds, accountant=accountant)
    step = {"noise_multiplier": noise_multiplier, "sampling_rate": sampling_rate, "rounds": rounds}
    return replace(report, epsilon=composed_epsilon([step], delta, accountant))


def composed_epsilon(steps: Sequence[Mapping[str, Any]], delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` of rounds run at different settings, one after the other.

    Each step is ``{"noise_multiplier", "sampling_rate", "rounds"}`` (a
    ledger's ``cumulative.events``); ``inf`` when any step had no noise.
    """
    if any(float(s["noise_multiplier"]) == 0 for s in steps):
        return math.inf
    import dp_accounting  # optional dependency: only the server that reports privacy needs it
    from dp_accounting import pld, rdp

    events = []
    for s in steps:
        event = dp_accounting.GaussianDpEvent(float(s["noise_multiplier"]))
        if float(s["sampling_rate"]) < 1:
            event = dp_accounting.PoissonSampledDpEvent(float(s["sampling_rate"]), event)
        events.append(dp_accounting.SelfComposedDpEvent(event, int(s["rounds"])))
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return float(acc.get_epsilon(delta))


def split_noise(noise_multiplier: float, cohort: int) -> tuple[float, float]:
    """Adaptive clipping's split of one noise budget ``z``: ``(z_delta, count_stddev)``.

    Andrew et al. 2021 ("Differentially private learning with adaptive
    clipping"), Theorem 1: releasing the noised mean of deltas (multiplier
    ``z_delta``) and the noised count of devices under the clip bound (stddev
    ``count_stddev``, sensitivity 1/2 after centring) costs what one Gaussian
    mechanism of multiplier ``z`` costs when ``z^-2 = z_delta^-2 + (2 count_stddev)^-2``.
    The count's stddev is the paper's ``cohort / 20``, raised for small cohorts
    so that at least half of the budget stays on the deltas. Account with ``z``.
    """
    if noise_multiplier <= 0 or cohort < 1:
        raise ValueError("adaptive clipping needs a positive noise multiplier and a cohort")
    count_stddev = max(cohort / 20, noise_multiplier / math.sqrt(2))
    z_delta = (noise_multiplier ** -2 - (2 * count_stddev) ** -2) ** -0.5
    return z_delta, count_stddev


LEDGER_SUFFIX = ".privacy.json"


def ledger_path(model_path: str | Path) -> Path:
    """Where the privacy ledger of a model version lives: ``round-003.tflite`` -> ``round-003.privacy.json``."""
    path = Path(model_path)
    return path.with_name(path.stem + LEDGER_SUFFIX)


def write_ledger(model_path: str | Path, ledger: Mapping[str, Any]) -> Path:
    """Write a version's ledger beside it (atomically), so the file and its privacy cost travel together."""
    path = ledger_path(model_path)
    atomic_write_bytes(path, (json.dumps(ledger, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_ledger(model_path: str | Path) -> dict | None:
    """The ledger written beside ``model_path`` by a server, or ``None`` when there is none.

    A model made without central DP has none;
    an unreadable one is an error, not silently "no privacy spent".
    """
    path = ledger_path(model_path)
    if not path.exists():
        return None
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable privacy ledger ({e})") from None
    if not isinstance(ledger, dict) or not {"delta", "round", "cumulative"} <= ledger.keys():
        raise ValueError(f"{path}: not a privacy ledger (needs delta, round and cumulative)")
    return ledger


def next_ledger(parent_model: str | Path, *, fingerprint: str, parent_fingerprint: str, noise_multiplier: float,
                sampling_rate: float, cohort: int, clip_norm: float, delta: float) -> dict[str, Any]:
    """The ledger of a version made from ``parent_model`` by one more round of central noise (``edgekit aggregate``).

    The cumulative epsilon composes this round with every round the parent's
    ledger accounts for (``cumulative.events``: noise multiplier, sampling
    rate and rounds of each stretch; a Flower run's ledger is one stretch at
    its largest sampling rate), so a chain of versions aggregated one at a
    time reports what the whole chain cost. ``since`` names the version the
    accounted rounds start from: a parent without a ledger was made without
    central noise, and no epsilon covers the rounds before it.
    """
    parent = read_ledger(parent_model)
    earlier: list[dict[str, Any]] = []
    since = parent_fingerprint
    if parent is not None:
        c = parent["cumulative"]
        earlier = list(c.get("events") or [{"noise_multiplier": parent["round"]["noise_multiplier"],
                                            "sampling_rate": c["sampling_rate"], "rounds": c["rounds"]}])
        since = c.get("since")
    this = {"noise_multiplier": noise_multiplier, "sampling_rate": sampling_rate, "rounds": 1}
    events = [*earlier, this]
    rounds = sum(int(e["rounds"]) for e in events)
    return {"delta": delta, "accountant": "rdp", "mechanism": "central DP, Gaussian, fixed clipping",
            "secure_aggregation": False, "fingerprint": fingerprint, "parent_fingerprint": parent_fingerprint,
            "round": {"round": rounds, "epsilon": composed_epsilon([this], delta), "noise_multiplier": noise_multiplier,
                      "sampling_rate": sampling_rate, "cohort": cohort, "clip_norm": clip_norm},
            "cumulative": {"rounds": rounds, "epsilon": composed_epsilon(events, delta), "since": since,
                           "sampling_rate": max(float(e["sampling_rate"]) for e in events), "events": events}}


def describe_ledger(ledger: Mapping[str, Any]) -> str:
    """One line for ``edgekit info``: this round's and the cumulative epsilon at the ledger's delta."""
    r, c = ledger["round"], ledger["cumulative"]

    def eps(value: float | None) -> str:
        return "none (no noise)" if value is None or not math.isfinite(value) else f"{value:.3g}"

    return (f"epsilon {eps(r.get('epsilon'))} this round, {eps(c.get('epsilon'))} over "
            f"{c.get('rounds', '?')} round(s), at delta {ledger['delta']:g} "
            f"({ledger.get('mechanism', 'central DP')})")


def ledger_info(model_path: str | Path | None) -> dict[str, str]:
    """``{"privacy": one line}`` for ``edgekit info`` when the model file has a ledger beside it, else ``{}``.

    ``None`` (the bundled model) has none. An unreadable ledger is reported in
    the line rather than hidden: the user asked what the file cost.
    """
    if model_path is None:
        return {}
    try:
        ledger = read_ledger(model_path)
    except ValueError as e:
        return {"privacy": str(e)}
    return {} if ledger is None else {"privacy": describe_ledger(ledger)}
