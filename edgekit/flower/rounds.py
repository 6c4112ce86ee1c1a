"""The server's side of a round, whatever drives it: check every update, aggregate, add central
noise, write the next version and its privacy ledger.

``RoundServer`` holds the state between rounds (the head, the version, the adaptive clip
norm); the Flower strategies in ``strategy.py`` only move messages to and from it.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
from flwr.common import (
    Scalar,
    log,
)

from ..federated import UpdateError, dp_epsilon, install_delta
from ..federated.aggregate import WEIGHT_CAP_X_MEDIAN
from ..federated.hazmat import Aggregator, Delta, add_central_noise, validate_delta
from ..federated.install import float_head
from ..federated.keys import load_signing_key, read_passphrase
from ..federated.privacy import split_noise, write_ledger
from ..model import EdgeModel
from .local import head_scores
from .settings import (
    CLIP_RANGE,
    QUANTIZATION_RANGE,
    FederationConfig,
    secagg_clipping_range,
)

ROUNDS_FILE = "rounds.jsonl"  # one RoundStats per line, in the output folder: the run's log, read by `simulate`


@dataclass
class RoundStats:
    """One row of the round table."""

    round: int
    fingerprint: str
    global_top1: float | None = None
    global_top3: float | None = None
    device_global_top3: float | None = None  # the global model on devices' own held-out text (mean)
    personal_top3: float | None = None  # the same, after the round's local training
    sampled: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    clip_norm: float | None = None  # the bound devices clipped to this round
    round_epsilon: float | None = None  # central DP: this round alone
    epsilon: float | None = None  # all rounds so far
    seconds: float = 0.0


@dataclass(frozen=True)
class Reply:
    """One device's answer to a training round, whatever carried it."""

    node_id: int
    arrays: list[np.ndarray]
    n_examples: int
    fingerprint: str
    metrics: dict[str, float]


class RoundServer:
    """The server's state across rounds: current version, clip bound, privacy spent, table rows."""

    def __init__(self, config: FederationConfig, eval_lines: list[str] | None = None,
                 on_round: Callable[[RoundStats], None] | None = None) -> None:
        if not config.model or not config.out_dir:
            raise ValueError("the server needs a model file and an output folder for the new versions")
        if not config.signing_key:
            raise ValueError("the server signs every version it writes and devices install only signed ones: "
                             "set signing-key to the .signing.key file from `edgekit keygen`")
        # Loaded before the first round: a wrong key or passphrase stops the run, not its first version.
        self.signer = load_signing_key(config.signing_key, read_passphrase(config.passphrase_file))
        self.config = config
        self.eval_lines = eval_lines
        self.on_round = on_round
        self.model_path = Path(config.model)
        self.out_dir = Path(config.out_dir)
        # Every version shares the body; heads differ. The server's own starting file: what it writes from
        # it is signed, and devices check that, so an unsigned (converted) start is no device trust decision.
        self.body = EdgeModel.load(self.model_path, stateless=True, unsigned_local=True)
        self.head: tuple[np.ndarray, np.ndarray] = self.body.base_head
        self.fingerprint = self.body.fingerprint
        self.shared_shape = (self.body.feature_dim, self.body.vocab.first_slot)
        self.clip_norm = config.clip_norm
        self.sampling_rates: list[float] = []
        self.history: list[RoundStats] = []
        self.pending = RoundStats(0, self.fingerprint)
        self._started = time.perf_counter()

    # -- one round ------------------------------------------------------------
    def start_round(self, server_round: int, sampled: int, available: int) -> dict[str, Scalar]:
        """Open the round's row; the settings every sampled device gets."""
        c = self.config
        self.sampling_rates.append(sampled / max(available, 1))
        self.pending = RoundStats(server_round, self.fingerprint, sampled=sampled, clip_norm=self.clip_norm)
        return {"round": server_round, "fingerprint": self.fingerprint, "epochs": c.epochs, "min-steps": c.min_steps,
                "learning-rate": c.learning_rate, "clip-norm": self.clip_norm, "noise-multiplier": c.noise_multiplier,
                "uniform-weights": c.uniform_weights, "max-examples": c.max_examples}

    def aggregate(self, server_round: int, replies: Iterable[Reply]) -> bool:
        """Individual deltas: check each, one per device, combine; ``True`` if a new version was written."""
        c, stats = self.config, self.pending
        rejected: Counter[str] = Counter()
        seen: set[int] = set()
        metrics: list[dict[str, float]] = []
        accepted: list[tuple[int, np.ndarray, np.ndarray, float]] = []
        for reply in replies:
            try:
                if reply.node_id in seen:  # participation limit: one update per device per round
                    raise UpdateError("duplicate-device", f"device {reply.node_id} already sent an update")
                seen.add(reply.node_id)
                dW, db, bit = self._check(reply)
            except UpdateError as e:
                rejected[e.reason] += 1
                continue
            metrics.append(reply.metrics)
            if reply.n_examples > 0:  # 0: the device learned nothing this round
                accepted.append((reply.n_examples, dW, db, bit))
        stats.accepted, stats.rejected = len(accepted), dict(rejected)
        stats.failures = stats.sampled - len(seen)
        self._device_metrics(metrics)
        if not accepted:
            return False
        # As on the update-file path: a weight is capped at a multiple of the round's median claim, so a few
        # devices claiming the maximum cannot outweigh many honest ones.
        cap = min(c.max_examples, WEIGHT_CAP_X_MEDIAN * float(np.median([n for n, *_ in accepted])))
        with Aggregator(self.shared_shape, c.aggregation, trim=c.trim) as agg:
            for n, dW, db, _ in accepted:
                agg.add(dW, db, 1.0 if c.uniform_weights else min(n, cap))
            return self._finish(server_round, agg.result(), agg.count, sum(bit for *_, bit in accepted))

    def aggregate_secure(self, server_round: int, replies: list[Reply]) -> bool:
        """SecAgg+ already summed: every reply carries the same mean, of the deltas and of the clip bits."""
        stats = self.pending
        # Counted from what came back: Flower's SecAgg+ workflow may list one dropout twice.
        stats.failures = stats.sampled - len(replies)
        self._device_metrics([r.metrics for r in replies])
        contributing = sum(r.n_examples > 0 for r in replies)
        if {r.fingerprint for r in replies} != {self.fingerprint}:
            stats.rejected = {"wrong-model": len(replies)}
            return False
        if not contributing:
            return False
        try:
            dW, db, bits = self._check(replies[0], slack=self._secagg_slack())
        except UpdateError as e:  # a mean of clipped deltas is never over the bound: some device lied
            stats.rejected = {e.reason: contributing}
            log(INFO, "round %s: SecAgg+ aggregate refused: %s", server_round, e)
            return False
        stats.accepted = contributing
        return self._finish(server_round, (dW, db), contributing, float(bits) * contributing)

    def _check(self, reply: Reply, slack: float = 0.0) -> tuple[np.ndarray, np.ndarray, float]:
        if reply.fingerprint != self.fingerprint:
            raise UpdateError("wrong-model", f"delta for model {reply.fingerprint!r}, this round is {self.fingerprint}")
        arrays = reply.arrays
        F, V = self.shared_shape
        if len(arrays) != 3 or arrays[0].shape != (F, V) or arrays[1].shape != (V,) or arrays[2].shape != (1,):
            raise UpdateError("wrong-shape", f"delta shapes {[a.shape for a in arrays]}, "
                              f"expected {(F, V)}, {(V,)} and (1,)")
        dW, db = (np.asarray(a, dtype=np.float32) for a in arrays[:2])
        validate_delta(dW, db, clip_norm=self.clip_norm + slack, noise_multiplier=self.config.noise_multiplier)
        bit = float(arrays[2][0])
        if not 0 <= bit <= 1 + slack:
            raise UpdateError("wrong-shape", f"clip indicator {bit} is not in [0, 1]")
        return dW, db, min(bit, 1.0)

    def _secagg_slack(self) -> float:
        """What SecAgg+'s quantization may add to the norm of a mean of clipped deltas.

        Every device weighs 1 under SecAgg+ and rounds each coordinate,
        stochastically, to a step of ``2 R / Q`` (``R`` the clipping range,
        ``Q`` the levels): less than one step per coordinate of the mean, here
        taken at its worst on every coordinate at once.
        """
        dim = (self.shared_shape[0] + 1) * self.shared_shape[1]
        return 2 * secagg_clipping_range(self.config) / QUANTIZATION_RANGE * math.sqrt(dim)

    def _device_metrics(self, metrics: list[dict[str, float]]) -> None:
        for key, attr in (("global-top3", "device_global_top3"), ("personal-top3", "personal_top3")):
            values = [float(m[key]) for m in metrics if key in m]
            setattr(self.pending, attr, float(np.mean(values)) if values else None)

    def _finish(self, server_round: int, mean: Delta, n: int, below: float) -> bool:
        """Central noise, the next clip bound, the new version and its ledger."""
        c, stats = self.config, self.pending
        if c.central_dp:
            z = float(c.central_noise_multiplier or 0.0)
            z_delta, count_std = split_noise(z, n) if c.adaptive else (z, 0.0)
            mean = add_central_noise(mean, self.clip_norm, z_delta, n)
            if c.adaptive:  # Andrew et al. 2021: geometric step toward the target quantile, on a noised count
                fraction = (below + np.random.default_rng().normal(0.0, count_std)) / n
                step = math.exp(-c.clip_learning_rate * (fraction - c.target_quantile))
                self.clip_norm = float(np.clip(self.clip_norm * step, c.clip_norm / CLIP_RANGE,
                                               c.clip_norm * CLIP_RANGE))
        parent = self.fingerprint
        self._install(server_round, mean)
        stats.fingerprint = self.fingerprint
        stats.round_epsilon, stats.epsilon = self._epsilon(server_round)
        if c.central_dp:
            self._write_ledger(server_round, stats, parent)
        return True

    def _install(self, server_round: int, delta: Delta) -> None:
        """Write the next version exactly as ``edgekit aggregate`` does: head in the flatbuffer, signed."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"round-{server_round:03d}.tflite"
        new = install_delta(self.model_path, delta, path, base_head=self.head, signing_key=self.signer)
        self.model_path, self.head, self.fingerprint = path, float_head(path, new), new.fingerprint
        if "warning" in new.metadata["head_storage"]:  # the int8 check's: the version is written all the same
            log(WARNING, "round %s: %s", server_round, new.metadata["head_storage"]["warning"])

    def _epsilon(self, server_round: int) -> tuple[float | None, float | None]:
        """(this round, all rounds so far): central noise against released models, local against the server.

        Devices are sampled as a fixed-size cohort, accounted as Poisson sampling
        at the largest rate of any round so far (the usual approximation).
        """
        c = self.config
        if c.central_dp:
            z = float(c.central_noise_multiplier or 0.0)
            one = dp_epsilon(z, sampling_rate=self.sampling_rates[-1], rounds=1, delta=c.dp_delta).epsilon
            total = dp_epsilon(z, sampling_rate=max(self.sampling_rates), rounds=server_round, delta=c.dp_delta)
            return one, total.epsilon
        if c.noise_multiplier > 0:
            return (dp_epsilon(c.noise_multiplier, rounds=1, delta=c.dp_delta).epsilon,
                    dp_epsilon(c.noise_multiplier, rounds=server_round, delta=c.dp_delta).epsilon)
        return None, None

    def _write_ledger(self, server_round: int, stats: RoundStats, parent: str) -> None:
        c = self.config
        mechanism = ("central DP, Gaussian, adaptive clipping (Andrew et al. 2021)" if c.adaptive
                     else "central DP, Gaussian, fixed clipping")
        write_ledger(self.model_path, {
            "delta": c.dp_delta, "accountant": "rdp", "mechanism": mechanism, "secure_aggregation": bool(c.secure),
            "fingerprint": self.fingerprint, "parent_fingerprint": parent,
            "round": {"round": server_round, "epsilon": stats.round_epsilon, "noise_multiplier":
                      c.central_noise_multiplier, "sampling_rate": self.sampling_rates[-1], "cohort": stats.accepted,
                      "clip_norm": stats.clip_norm, "next_clip_norm": self.clip_norm},
            "cumulative": {"rounds": server_round, "epsilon": stats.epsilon,
                           "sampling_rate": max(self.sampling_rates)}})

    # -- evaluation, the end of a round ------------------------------------------
    def close_round(self, server_round: int) -> dict[str, float] | None:
        """Global model on the pooled held-out text; writes and reports the round's row."""
        stats = self.pending if self.pending.round == server_round else RoundStats(server_round, self.fingerprint)
        scores = None
        if self.eval_lines:
            scores = head_scores(self.body, self.head, self.eval_lines, self.config.eval_targets)
            stats.global_top1, stats.global_top3 = scores["top1"], scores["top3"]
        stats.seconds = time.perf_counter() - self._started
        self.history.append(stats)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / ROUNDS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(stats)) + "\n")
        if self.on_round is not None:
            self.on_round(stats)
        return scores


def read_rounds(out_dir: str | Path) -> list[RoundStats]:
    """The rows a server wrote so far to ``out_dir`` (``ROUNDS_FILE``); a half-written last line is skipped."""
    path = Path(out_dir) / ROUNDS_FILE
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(RoundStats(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                break
    return rows
