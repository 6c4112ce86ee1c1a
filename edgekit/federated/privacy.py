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
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

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
    import dp_accounting  # optional dependency: only the server that reports privacy needs it
    from dp_accounting import pld, rdp

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
    if not (0 < sampling_rate <= 1 and rounds >= 1 and 0 < delta < 1 and noise_multiplier >= 0):
        raise ValueError("need 0 < sampling_rate <= 1, rounds >= 1, 0 < delta < 1, noise_multiplier >= 0")
    report = PrivacyReport(epsilon=math.inf, delta=delta, noise_multiplier=noise_multiplier,
                           sampling_rate=sampling_rate, rounds=rounds, accountant=accountant)
    if noise_multiplier == 0:
        return report
    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    acc = rdp.RdpAccountant() if accountant == "rdp" else pld.PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return replace(report, epsilon=float(acc.get_epsilon(delta)))
