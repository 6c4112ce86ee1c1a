"""The Flower strategies that drive a round; ``RoundServer`` (``rounds.py``) does its arithmetic.

``RoundServer`` is the same whatever carries the deltas, so a Flower round
and ``edgekit aggregate`` over update files agree:

- every delta is checked like an update file (``wrong-model`` fingerprint,
  ``wrong-shape``, ``not-finite``, ``over-norm`` via ``validate_delta``), and
  a device (Flower's node id) counts once per round (``duplicate-device``);
- accepted deltas go through ``federated.hazmat.Aggregator`` (weighted
  FedAvg, coordinate-wise median or trimmed mean);
- central DP (on by default with FedAvg) is ``add_central_noise`` on the
  uniform mean, with the clip bound adapted each round to a quantile of the
  devices' delta norms (``privacy.split_noise``); the epsilon spent is written
  beside each version (``privacy.write_ledger``);
- the next version is written by ``federated.install_delta``: a new
  model file per round, its fingerprint being the new model version.

Two Flower strategies drive it:

- ``EdgeStrategy``, a Message-API strategy (``flwr.serverapp.strategy``) for
  plain rounds;
- ``SecureEdgeStrategy``, for SecAgg+ rounds. Flower 1.42 runs SecAgg+ only
  as ``SecAggPlusWorkflow``, which drives a strategy of the older
  ``flwr.server.strategy`` API through a ``LegacyContext``: there is no
  SecAgg+ for Message-API strategies yet (docs/deploy-flower.md). Under
  SecAgg+ the workflow hands over only the (already weighted) mean, the same
  array in every result: per-device checks are impossible, so the server
  refuses the round if any device reports another model version or if the
  mean's norm is over the clip bound (a mean of clipped deltas never is).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy as FitStrategy
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .rounds import Reply, RoundServer
from .settings import (
    ARRAYS,
    CONFIG,
    INFO_KEY,
    METRICS,
    FederationConfig,
)


class EdgeStrategy(Strategy):
    """Plain rounds on Flower's Message API: sample devices, send the head, combine their deltas."""

    def __init__(self, server: RoundServer) -> None:
        self.server = server

    def summary(self) -> None:
        c = self.server.config
        log(INFO, "EdgeStrategy: %s, clip %s%s, central noise %s", c.aggregation, c.clip_norm,
            " (adaptive)" if c.adaptive else "", c.central_noise_multiplier)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = wait_for_nodes(grid, self.server.config)
        if not nodes:
            return []
        chosen = sample(nodes, self.server.config)
        settings = {**config, **self.server.start_round(server_round, len(chosen), len(nodes))}
        content = RecordDict({ARRAYS: ArrayRecord([np.asarray(a) for a in self.server.head]),
                              CONFIG: ConfigRecord(settings)})
        return [Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN) for node in chosen]

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        def answers() -> Iterable[Reply]:
            for msg in replies:
                if msg.has_error():
                    continue  # counted as a failure: sampled but no usable answer
                content = msg.content
                metrics = dict(content[METRICS])
                yield Reply(msg.metadata.src_node_id, content[ARRAYS].to_numpy_ndarrays(),
                            int(metrics.pop("num-examples", 0)), str(content[INFO_KEY].get("fingerprint", "")),
                            {k: float(v) for k, v in metrics.items()})

        if not self.server.aggregate(server_round, answers()):
            return None, None
        stats = self.server.pending
        return (ArrayRecord([np.asarray(a) for a in self.server.head]),
                MetricRecord({"accepted": stats.accepted, "failures": stats.failures}))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No separate evaluation round: devices report personalized top-3 with their delta."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn`` for ``start``: the server's held-out text; closes the round's row."""
        scores = self.server.close_round(server_round)
        return None if scores is None else MetricRecord({"top1": scores["top1"], "top3": scores["top3"]})


def wait_for_nodes(grid: Grid, config: FederationConfig) -> list[int]:
    """The connected devices once ``min_clients`` are there; ``[]`` if they are not within ``timeout``."""
    deadline = time.monotonic() + config.timeout
    while len(nodes := sorted(grid.get_node_ids())) < config.min_clients:
        if time.monotonic() > deadline:
            log(INFO, "only %s of the %s devices needed connected: round skipped", len(nodes), config.min_clients)
            return []
        time.sleep(1)
    return nodes


def sample(nodes: list[int], config: FederationConfig) -> list[int]:
    """This round's cohort: ``fraction`` of the connected devices, at least ``min_clients``."""
    wanted = min(max(int(len(nodes) * config.fraction), config.min_clients), len(nodes))
    chosen = np.random.default_rng().choice(len(nodes), size=wanted, replace=False)
    return [nodes[i] for i in sorted(chosen)]


class SecureEdgeStrategy(FitStrategy):
    """SecAgg+ rounds: the strategy Flower's ``SecAggPlusWorkflow`` drives (the older strategy API)."""

    def __init__(self, server: RoundServer) -> None:
        self.server = server

    def __repr__(self) -> str:
        c = self.server.config
        return f"SecureEdgeStrategy(clip={c.clip_norm}, central noise={c.central_noise_multiplier})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters:
        return ndarrays_to_parameters(list(self.server.head))

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        c = self.server.config
        if not client_manager.wait_for(c.min_clients, timeout=int(c.timeout)):
            return []  # too few devices connected: the workflow skips the round
        available = client_manager.num_available()
        wanted = min(max(int(available * c.fraction), c.min_clients), available)
        clients = client_manager.sample(num_clients=wanted, min_num_clients=c.min_clients)
        fit_config = self.server.start_round(server_round, len(clients), available)
        return [(client, FitIns(ndarrays_to_parameters(list(self.server.head)), fit_config)) for client in clients]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        replies = [Reply(int(proxy.node_id), parameters_to_ndarrays(res.parameters), res.num_examples,
                         str(res.metrics.get("fingerprint", "")),
                         {k: float(v) for k, v in res.metrics.items() if k != "fingerprint"})
                   for proxy, res in results]
        if not self.server.aggregate_secure(server_round, replies):
            return None, {}
        return ndarrays_to_parameters(list(self.server.head)), {"accepted": self.server.pending.accepted}

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        scores = self.server.close_round(server_round)
        if scores is None:
            return None
        return float(scores["perplexity"]), {"top1": scores["top1"], "top3": scores["top3"]}
