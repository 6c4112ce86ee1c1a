"""The server side of a round: check each device's delta, combine, make the next model version.

``EdgeStrategy`` is a Flower strategy whose arithmetic is the project's own,
so a Flower round and ``edgekit aggregate`` over update files agree:

- every delta is checked like an update file (``wrong-model`` fingerprint,
  ``wrong-shape``, ``not-finite``, ``over-norm`` via ``validate_delta``);
- accepted deltas go through ``federated.hazmat.Aggregator`` (weighted
  FedAvg, coordinate-wise median or trimmed mean);
- optional central DP noise is ``add_central_noise`` on the uniform mean, and the
  privacy spent so far comes from ``federated.dp_epsilon``;
- the next version is written by ``federated.install_delta``: a new
  model file per round, its fingerprint being the new model version.

Under SecAgg+ the workflow hands this strategy only the (already weighted)
mean, the same array in every result: per-device checks are impossible, so
the server trusts device-side clipping and refuses the round if any device
reports another model version.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.common import (EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters,
                         parameters_to_ndarrays)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from ..federated import UpdateError, dp_epsilon, install_delta
from ..federated.install import float_head
from ..federated.hazmat import Aggregator, Delta, add_central_noise, validate_delta
from ..model import EdgeModel
from .local import head_scores
from .settings import FederationConfig

Results = list[tuple[ClientProxy, FitRes]]


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
    epsilon: float | None = None
    seconds: float = 0.0


class EdgeStrategy(Strategy):
    """Sample devices, send them the global head, combine their deltas into the next version."""

    def __init__(self, config: FederationConfig, eval_lines: list[str] | None = None,
                 on_round: Callable[[RoundStats], None] | None = None) -> None:
        if not config.model or not config.out_dir:
            raise ValueError("the server needs a model file and an output folder for the new versions")
        self.config = config
        self.eval_lines = eval_lines
        self.on_round = on_round
        self.model_path = Path(config.model)
        self.out_dir = Path(config.out_dir)
        self.body = EdgeModel.load(self.model_path, stateless=True)  # every version shares it; heads differ
        self.head: tuple[np.ndarray, np.ndarray] = self.body.base_head
        self.fingerprint = self.body.fingerprint
        self.shared_shape = (self.body.feature_dim, self.body.vocab.first_slot)
        self.sampling_rates: list[float] = []
        self.history: list[RoundStats] = []
        self._pending = RoundStats(0, self.fingerprint)
        self._started = time.perf_counter()

    def __repr__(self) -> str:
        c = self.config
        return f"EdgeStrategy({c.aggregation}, clip={c.clip_norm}, secure={c.secure})"

    # -- configuration --------------------------------------------------------
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters:
        return ndarrays_to_parameters(list(self.head))

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        c = self.config
        if not client_manager.wait_for(c.min_clients, timeout=int(c.timeout)):
            return []  # too few devices connected: the workflow skips the round
        available = client_manager.num_available()
        wanted = max(int(available * c.fraction), c.min_clients)
        clients = client_manager.sample(num_clients=min(wanted, available), min_num_clients=c.min_clients)
        self.sampling_rates.append(len(clients) / max(available, 1))
        self._pending = RoundStats(server_round, self.fingerprint, sampled=len(clients))
        fit_config: dict[str, Scalar] = {
            "round": server_round, "fingerprint": self.fingerprint, "epochs": c.epochs, "min-steps": c.min_steps,
            "learning-rate": c.learning_rate,
            "clip-norm": c.clip_norm, "noise-multiplier": c.noise_multiplier,
            "uniform-weights": c.uniform_weights, "max-examples": c.max_examples}
        return [(client, FitIns(parameters, fit_config)) for client in clients]

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        """No separate evaluation round: devices report personalized top-3 with their delta."""
        return []

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    # -- aggregation ----------------------------------------------------------
    def aggregate_fit(self, server_round: int, results: Results,
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        stats = self._pending
        # Counted from what came back: Flower's SecAgg+ workflow may list one dropout twice.
        stats.failures = stats.sampled - len(results)
        stats.device_global_top3 = _mean_metric(results, "global-top3")
        stats.personal_top3 = _mean_metric(results, "personal-top3")
        combine = self._secure_mean if self.config.secure else self._checked_aggregate
        delta, n_contributing = combine(results, stats)
        if delta is None:
            return None, {}
        if self.config.central_noise_multiplier > 0:
            delta = add_central_noise(delta, self.config.clip_norm, self.config.central_noise_multiplier,
                                      n_contributing)
        self._install(server_round, delta)
        stats.fingerprint = self.fingerprint
        stats.epsilon = self._epsilon(server_round)
        return ndarrays_to_parameters(list(self.head)), {"accepted": stats.accepted, "failures": stats.failures}

    def _checked_aggregate(self, results: Results, stats: RoundStats) -> tuple[Delta | None, int]:
        """Validate each delta as the file path does, then stream it into the aggregator."""
        c = self.config
        rejected: Counter[str] = Counter()
        with Aggregator(self.shared_shape, c.aggregation, trim=c.trim) as agg:
            for _, res in results:
                try:
                    dW, db = self._check(res)
                except UpdateError as e:
                    rejected[e.reason] += 1
                    continue
                if res.num_examples > 0:  # 0: the device learned nothing this round
                    agg.add(dW, db, 1.0 if c.uniform_weights else min(res.num_examples, c.max_examples))
            stats.accepted, stats.rejected = agg.count, dict(rejected)
            return (agg.result() if agg.count else None), agg.count

    def _check(self, res: FitRes) -> Delta:
        if res.metrics.get("fingerprint") != self.fingerprint:
            raise UpdateError("wrong-model", f"delta for model {res.metrics.get('fingerprint')!r}, "
                              f"this round is {self.fingerprint}")
        arrays = parameters_to_ndarrays(res.parameters)
        F, V = self.shared_shape
        if len(arrays) != 2 or arrays[0].shape != (F, V) or arrays[1].shape != (V,):
            raise UpdateError("wrong-shape", f"delta shapes {[a.shape for a in arrays]}, expected {(F, V)}, {(V,)}")
        dW, db = (a.astype(np.float32) for a in arrays)
        validate_delta(dW, db, clip_norm=self.config.clip_norm, noise_multiplier=self.config.noise_multiplier)
        return dW, db

    def _secure_mean(self, results: Results, stats: RoundStats) -> tuple[Delta | None, int]:
        """SecAgg+ already summed: every result carries the same weighted mean."""
        versions = {res.metrics.get("fingerprint") for _, res in results}
        contributing = sum(res.num_examples > 0 for _, res in results)
        if versions != {self.fingerprint}:
            stats.rejected = {"wrong-model": len(results)}
            return None, 0
        stats.accepted = contributing
        if not contributing:
            return None, 0
        dW, db = (a.astype(np.float32) for a in parameters_to_ndarrays(results[0][1].parameters))
        return (dW, db), contributing

    def _install(self, server_round: int, delta: Delta) -> None:
        """Write the next version exactly as ``edgekit aggregate`` does."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"round-{server_round:03d}.tflite"
        new = install_delta(self.model_path, delta, path, base_head=self.head)
        self.model_path, self.head, self.fingerprint = path, float_head(path, new), new.fingerprint

    def _epsilon(self, server_round: int) -> float | None:
        """Privacy spent so far: central noise against released models, local noise against the server."""
        c = self.config
        if c.central_noise_multiplier > 0:
            rate = max(self.sampling_rates)
            return dp_epsilon(c.central_noise_multiplier, sampling_rate=rate, rounds=server_round,
                              delta=c.dp_delta).epsilon
        if c.noise_multiplier > 0:
            return dp_epsilon(c.noise_multiplier, rounds=server_round, delta=c.dp_delta).epsilon
        return None

    # -- evaluation -----------------------------------------------------------
    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """Global model on the pooled held-out text; closes the round's row of the table."""
        stats = self._pending if self._pending.round == server_round else RoundStats(server_round, self.fingerprint)
        scores = None
        if self.eval_lines:
            scores = head_scores(self.body, self.head, self.eval_lines, self.config.eval_targets)
            stats.global_top1, stats.global_top3 = scores["top1"], scores["top3"]
        stats.seconds = time.perf_counter() - self._started
        self.history.append(stats)
        if self.on_round is not None:
            self.on_round(stats)
        if scores is None:
            return None
        return float(scores["perplexity"]), {"top1": scores["top1"], "top3": scores["top3"]}


def _mean_metric(results: Results, key: str) -> float | None:
    values = [float(res.metrics[key]) for _, res in results if key in res.metrics]
    return float(np.mean(values)) if values else None
