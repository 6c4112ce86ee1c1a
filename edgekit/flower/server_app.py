"""The ServerApp: ``@app.main()`` runs the rounds, plain or SecAgg+ (``secure``, on by default).

Plain rounds run ``EdgeStrategy`` (Flower's Message API) with
``Strategy.start``. SecAgg+ in Flower 1.42 exists only as a *workflow*
(``SecAggPlusWorkflow``) that drives the four protocol stages and hands the
unmasked mean to a strategy of the older API inside a ``LegacyContext``; so
secure rounds run ``SecureEdgeStrategy`` there. Both strategies share one
``RoundServer`` (checks, central DP, ledger, new versions).

Quantization: SecAgg+ clips every coordinate to ``[-clipping_range,
clipping_range]`` and maps it onto ``quantization_range`` integers. A delta
of L2 norm at most ``clip_norm`` has no coordinate beyond ``clip_norm`` and
the clip indicator is 0 or 1, so ``clipping_range = max(largest clip bound,
1)`` loses nothing to clipping. Every device weighs 1 under SecAgg+
(``FederationConfig.uniform_weights``), so ``max_weight = 1``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from ..tokenizer import read_text_lines
from .rounds import RoundServer, RoundStats
from .settings import QUANTIZATION_RANGE, FederationConfig, secagg_clipping_range
from .strategy import EdgeStrategy, SecureEdgeStrategy


def secagg_workflow(config: FederationConfig) -> SecAggPlusWorkflow:
    """SecAgg+ sized for head deltas (see the module docstring)."""
    return SecAggPlusWorkflow(num_shares=config.secagg_shares, reconstruction_threshold=config.secagg_threshold,
                              max_weight=1.0, clipping_range=secagg_clipping_range(config),
                              quantization_range=QUANTIZATION_RANGE, timeout=config.timeout)


def run_federation(grid: Grid, context: Context, config: FederationConfig, eval_lines: list[str] | None = None,
                   on_round: Callable[[RoundStats], None] | None = None) -> RoundServer:
    """Run ``config.rounds`` rounds on ``grid``; returns the server (its ``history``, final version)."""
    server = RoundServer(config, eval_lines, on_round)
    if config.secure:
        strategy = SecureEdgeStrategy(server)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds,
                                                                    round_timeout=config.timeout), strategy=strategy)
        DefaultWorkflow(fit_workflow=secagg_workflow(config))(grid, legacy)
    else:
        plain = EdgeStrategy(server)
        plain.start(grid, ArrayRecord(list(server.head)), num_rounds=config.rounds, timeout=config.timeout,
                    evaluate_fn=plain.evaluate)
    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployment and simulation alike: every setting comes from the run config (``flwr run``)."""
    config = FederationConfig.from_run_config(context.run_config)
    run_federation(grid, context, config, _eval_lines(context.run_config))


def _eval_lines(run_config: Mapping[str, Any]) -> list[str] | None:
    """The server's own held-out text (``eval-text``), if it has any: devices' text stays on devices."""
    path = run_config.get("eval-text")
    return [ln for ln in read_text_lines(Path(str(path))) if ln.strip()] if path else None
