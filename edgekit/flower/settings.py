"""One place for the knobs of a federation, shared by server, clients and the CLI.

Flower hands apps their settings as flat ``run_config`` / ``node_config``
dictionaries with kebab-case keys (``pyproject.toml``, ``flwr run
--run-config``, ``flower-supernode --node-config``). ``FederationConfig``
is the typed view of the run config; simulation builds one directly.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..federated import DEFAULT_MAX_EXAMPLES, DEFAULT_TRIM, MODES

# Run-config keys of earlier versions. Unknown keys are ignored, so a deployment
# still saying ``local-noise = 1.0`` would quietly run without noise: refuse it.
RENAMED_KEYS = {"local-noise": "noise-multiplier", "central-noise": "central-noise-multiplier"}
# Central DP's noise multiplier when nothing says otherwise. 1.0: with the round's
# sampling it spends epsilon ~1-4 per round at delta 1e-10 (the ledger reports it), and its
# noise std on the mean is clip/n per coordinate, so it costs utility below a cohort of
# several thousand devices (README: "What DP costs at scale").
DEFAULT_CENTRAL_NOISE = 1.0
# The adaptive clip bound stays within [clip_norm / CLIP_RANGE, clip_norm * CLIP_RANGE]:
# SecAgg+ quantizes on a range fixed for the run, and a bound that ran away would waste it.
CLIP_RANGE = 4.0
# Keys of a training round's Message-API records, the same on server and devices.
ARRAYS, CONFIG, METRICS, INFO_KEY = "arrays", "config", "metrics", "info"


@dataclass(frozen=True)
class FederationConfig:
    """What every round does; the server sends the device-side part to each client.

    - ``aggregation``: ``fedavg`` (weighted by examples), ``median`` or ``trimmed-mean``.
    - ``clip_norm``: devices clip their head delta to this L2 norm (always on:
      it bounds one user's influence and is what the server checks). A
      round's local training moves the bundled 64 x 10,005 head by an L2
      norm of 15-20 (measured, 2 epochs at 3e-3 on 1,500-2,000 words of
      SMS), hence 20 here. Deliberately not the update files'
      ``DEFAULT_CLIP_NORM`` (50): that one bounds a full ``edgekit
      personalize`` (norm ~46); here it would clip nothing and, with local
      or central noise, add 2.5 times the noise a round needs.
    - ``noise_multiplier``: noise multiplier a device adds before sending (local DP).
    - ``central_noise_multiplier``: noise multiplier the server adds to the
      mean of clipped deltas (central DP; uniform weights so one user's
      influence is exactly ``clip_norm / n``). ``None`` (the default) means
      ``DEFAULT_CENTRAL_NOISE`` wherever central DP can run (``fedavg``, no
      local noise) and 0 elsewhere: privacy is on unless a setting rules it out.
    - ``adaptive_clipping``, ``target_quantile``, ``clip_learning_rate``: with
      central DP the clip bound follows the ``target_quantile`` of the devices'
      delta norms (Andrew et al. 2021, geometric update; the count of devices
      under the bound is itself noised and accounted, ``privacy.split_noise``).
      ``clip_norm`` is then the first round's bound; it moves within
      ``[clip_norm / CLIP_RANGE, clip_norm * CLIP_RANGE]``.
    - ``dp_delta``: the delta of every epsilon reported (Gboard reports at 1e-10).
    - ``weighted``: plain FedAvg weights a delta by its examples (capped at
      ``max_examples``); see ``uniform_weights`` for where it cannot.
    - ``epochs``, ``min_steps``, ``learning_rate``: local head training per
      round. Fewer steps than a device's own ``edgekit personalize`` (4
      epochs, at least 150): a federation repeats it every round, and
      devices must finish in seconds. On the bundled model and 1,500-word
      clients, 2 epochs at 3e-3 raise top-3 on a device's own later text
      (28.3% -> 28.5%, 11 writers); at 1e-2 they lower it (28.2%).
    - ``signing_key``: the server's Ed25519 signing key file (``edgekit
      keygen``'s ``<stem>.signing.key``). Required: the server signs every
      version it writes, as ``edgekit aggregate`` does, and devices install
      only signed versions. Its passphrase, if it has one, is read from
      ``passphrase_file``, else ``$EDGEKIT_KEY_PASSPHRASE`` (no prompt: the
      ServerApp runs unattended).
    - ``secure``: SecAgg+; the server only learns the sum, so it needs
      ``fedavg`` and cannot check individual norms (devices clip; the server
      refuses a sum whose mean is over the clip bound). ``None`` (the default):
      on with ``fedavg``, off with the robust modes, which need individual deltas.
    """

    model: str = ""
    rounds: int = 3
    fraction: float = 1.0
    min_clients: int = 2
    aggregation: str = "fedavg"
    trim: float = DEFAULT_TRIM
    clip_norm: float = 20.0
    noise_multiplier: float = 0.0
    central_noise_multiplier: float | None = None
    adaptive_clipping: bool = True
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    dp_delta: float = 1e-10
    max_examples: int = DEFAULT_MAX_EXAMPLES
    weighted: bool = True
    secure: bool | None = None
    secagg_shares: float = 0.5
    secagg_threshold: float = 0.7
    epochs: int = 2
    min_steps: int = 0
    learning_rate: float = 3e-3
    out_dir: str = ""
    signing_key: str = ""
    passphrase_file: str = ""
    eval_text: str = ""
    eval_targets: int = 4000
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.aggregation not in MODES:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(MODES)}")
        central_possible = self.aggregation == "fedavg" and self.noise_multiplier == 0
        if self.secure is None:  # frozen dataclass: settle the defaults once, here
            object.__setattr__(self, "secure", self.aggregation == "fedavg")
        if self.central_noise_multiplier is None:
            object.__setattr__(self, "central_noise_multiplier", DEFAULT_CENTRAL_NOISE if central_possible else 0.0)
        if self.secure and self.aggregation != "fedavg":
            raise ValueError("secure aggregation reveals only the sum: it works with fedavg, "
                             f"not {self.aggregation} (set secure = false)")
        if not 0 < self.target_quantile < 1 or self.clip_learning_rate < 0:
            raise ValueError("need 0 < target_quantile < 1 and clip_learning_rate >= 0")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        central = float(self.central_noise_multiplier or 0.0)
        if self.clip_norm <= 0 or self.noise_multiplier < 0 or central < 0:
            raise ValueError("need clip_norm > 0 and non-negative noise multipliers")
        if central > 0 and (self.aggregation != "fedavg" or self.noise_multiplier > 0):
            raise ValueError("central noise needs fedavg and no local noise (a median's sensitivity "
                             "is not the clip norm; local noise would count twice): "
                             "set central-noise-multiplier = 0")

    @property
    def central_dp(self) -> bool:
        """Central DP is on (noise on the server's mean of clipped deltas)."""
        return bool(self.central_noise_multiplier)

    @property
    def adaptive(self) -> bool:
        """The clip bound adapts each round: only with central DP, whose noise covers the count it uses."""
        return self.adaptive_clipping and self.central_dp

    @property
    def uniform_weights(self) -> bool:
        """Every device counts the same, unless plain FedAvg is ``weighted`` by examples.

        Central DP needs it (one user's influence is exactly ``clip_norm / n``),
        robust modes ignore weights, and under SecAgg+ the server could not
        check a device's claimed number of examples, which would buy it the
        round (issue 15: a claimed 1e9 examples took 89% of the weight).
        """
        return not self.weighted or self.central_dp or bool(self.secure) or self.aggregation != "fedavg"

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], **overrides: Any) -> FederationConfig:
        """Read kebab-case keys (``clip-norm``) from a Flower run config; unknown keys are ignored."""
        for old, new in RENAMED_KEYS.items():
            if old in run_config:
                raise ValueError(f"run config key {old!r} is now {new!r}; rename it")
        known = {f.name: f.type for f in fields(cls)}
        values = {k.replace("-", "_"): v for k, v in run_config.items() if k.replace("-", "_") in known}
        return cls(**{**values, **overrides})


QUANTIZATION_RANGE = 1 << 22  # SecAgg+ levels (Flower's default); sums of 1,000 devices stay below the 2**32 modulus


def secagg_clipping_range(config: FederationConfig) -> float:
    """SecAgg+'s range: the largest clip bound of the run, or 1 (the clip indicator), whichever is larger."""
    return max(config.clip_norm * (CLIP_RANGE if config.adaptive else 1.0), 1.0)
