"""One place for the knobs of a federation, shared by server, clients and the CLI.

Flower hands apps their settings as flat ``run_config`` / ``node_config``
dictionaries with kebab-case keys (``pyproject.toml``, ``flwr run
--run-config``, ``flower-supernode --node-config``). ``FederationConfig``
is the typed view of the run config; simulation builds one directly.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..federated import DEFAULT_MAX_EXAMPLES, DEFAULT_TRIM, MODES

# Run-config keys of earlier versions. Unknown keys are ignored, so a deployment
# still saying ``local-noise = 1.0`` would quietly run without noise: refuse it.
RENAMED_KEYS = {"local-noise": "noise-multiplier", "central-noise": "central-noise-multiplier"}


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
      influence is exactly ``clip_norm / n``).
    - ``epochs``, ``min_steps``, ``learning_rate``: local head training per
      round. Fewer steps than a device's own ``edgekit personalize`` (4
      epochs, at least 150): a federation repeats it every round, and
      devices must finish in seconds. On the bundled model and 1,500-word
      clients, 2 epochs at 3e-3 raise top-3 on a device's own later text
      (28.3% -> 28.5%, 11 writers); at 1e-2 they lower it (28.2%).
    - ``secure``: SecAgg+; the server only learns the sum, so it needs
      ``fedavg`` and cannot check individual norms (devices clip anyway).
    """

    model: str = ""
    rounds: int = 3
    fraction: float = 1.0
    min_clients: int = 2
    aggregation: str = "fedavg"
    trim: float = DEFAULT_TRIM
    clip_norm: float = 20.0
    noise_multiplier: float = 0.0
    central_noise_multiplier: float = 0.0
    dp_delta: float = 1e-6
    max_examples: int = DEFAULT_MAX_EXAMPLES
    secure: bool = False
    secagg_shares: float = 0.5
    secagg_threshold: float = 0.7
    epochs: int = 2
    min_steps: int = 0
    learning_rate: float = 3e-3
    out_dir: str = ""
    eval_text: str = ""
    eval_targets: int = 4000
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.aggregation not in MODES:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose one of {', '.join(MODES)}")
        if self.secure and self.aggregation != "fedavg":
            raise ValueError("secure aggregation reveals only the sum: it works with fedavg, "
                             f"not {self.aggregation}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.clip_norm <= 0 or self.noise_multiplier < 0 or self.central_noise_multiplier < 0:
            raise ValueError("need clip_norm > 0 and non-negative noise multipliers")
        if self.central_noise_multiplier > 0 and (self.aggregation != "fedavg" or self.noise_multiplier > 0):
            raise ValueError("central noise needs fedavg and no local noise (a median's sensitivity "
                             "is not the clip norm; local noise would count twice)")

    @property
    def uniform_weights(self) -> bool:
        """Central DP needs every device to count the same (and robust modes ignore weights)."""
        return self.central_noise_multiplier > 0 or self.aggregation != "fedavg"

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any], **overrides: Any) -> "FederationConfig":
        """Read kebab-case keys (``clip-norm``) from a Flower run config; unknown keys are ignored."""
        for old, new in RENAMED_KEYS.items():
            if old in run_config:
                raise ValueError(f"run config key {old!r} is now {new!r}; rename it")
        known = {f.name: f.type for f in fields(cls)}
        values = {k.replace("-", "_"): v for k, v in run_config.items() if k.replace("-", "_") in known}
        return cls(**{**values, **overrides})
