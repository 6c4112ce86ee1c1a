"""The ServerApp: ``EdgeStrategy`` inside Flower's round workflow, with or without SecAgg+.

SecAgg+ in Flower is a *workflow* (``SecAggPlusWorkflow``) that drives the
four protocol stages and then hands the unmasked mean to a strategy's
``aggregate_fit``; plain rounds use the default fit workflow. Both run under
``DefaultWorkflow``, so switching SecAgg+ on is one setting (``secure``), not
another server.

Quantization: SecAgg+ clips every coordinate to ``[-clipping_range,
clipping_range]`` and maps it onto ``quantization_range`` integers. A delta
of L2 norm at most ``clip_norm`` has no coordinate beyond ``clip_norm``, so
``clipping_range = clip_norm`` loses nothing to clipping and spends all the
integer range on values that occur. Weights (examples) are quantized as
``weight / max_examples``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from flwr.app import Context
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from ..tokenizer import read_text_lines
from .settings import FederationConfig
from .strategy import EdgeStrategy, RoundStats

QUANTIZATION_RANGE = 1 << 22  # Flower's default; sums of 1,000 devices stay below the 2**32 modulus


def secagg_workflow(config: FederationConfig) -> SecAggPlusWorkflow:
    """SecAgg+ sized for head deltas (see the module docstring)."""
    return SecAggPlusWorkflow(num_shares=config.secagg_shares, reconstruction_threshold=config.secagg_threshold,
                              max_weight=float(config.max_examples), clipping_range=config.clip_norm,
                              quantization_range=QUANTIZATION_RANGE, timeout=config.timeout)


def run_federation(grid: Grid, context: Context, config: FederationConfig, eval_lines: list[str] | None = None,
                   on_round: Callable[[RoundStats], None] | None = None) -> EdgeStrategy:
    """Run ``config.rounds`` rounds on ``grid``; returns the strategy (its ``history``, final version)."""
    strategy = EdgeStrategy(config, eval_lines, on_round)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds, round_timeout=config.timeout),
                           strategy=strategy)
    fit_workflow = secagg_workflow(config) if config.secure else None
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    return strategy


def make_server_app(config: FederationConfig | None = None, eval_lines: list[str] | None = None,
                    on_round: Callable[[RoundStats], None] | None = None) -> ServerApp:
    """A ServerApp; without ``config`` it reads the run config (deployment, ``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = config or FederationConfig.from_run_config(context.run_config)
        lines = eval_lines if eval_lines is not None else _eval_lines(context.run_config)
        run_federation(grid, context, settings, lines, on_round)

    return app


def _eval_lines(run_config: Mapping[str, Any]) -> list[str] | None:
    """The server's own held-out text (``eval-text``), if it has any: devices' text stays on devices."""
    path = run_config.get("eval-text")
    return [ln for ln in read_text_lines(path) if ln.strip()] if path else None


app = make_server_app()
