"""Many simulated devices on one machine with Flower's simulation engine.

The engine runs the real ClientApp and ServerApp; only the network is
missing. Keeping 100 clients x 3 rounds within minutes on two cores comes
from a few choices:

- each client has about 1,500 words of text (``--words``), and its
  held-out evaluation is capped (``client_app.HELDOUT_TARGETS``);
- worker processes cache the global model (one interpreter per version);
- Ray gets at most ``cpus`` CPUs and one CPU per client, so there are never
  more worker processes than cores;
- the global model is scored once per round on a fixed, capped sample of
  every client's held-out text, on the server.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, TextIO

from .partitions import Partition, take_words, write_partitions
from .settings import FederationConfig
from .strategy import RoundStats



def pooled_heldout(partitions: list[Partition], words: int) -> list[str]:
    """An equal share of every client's held-out text, ``words`` in all: the global test set.

    Equal shares, because the global model serves every writer; a paragraph-
    per-line novel must not crowd out the SMS writers.
    """
    share = max(1, words // len(partitions))
    return [ln for p in partitions for ln in take_words(p.heldout, 0, share)[0]]


def run(config: FederationConfig, partitions: list[Partition], workdir: str | Path, cpus: int = 2,
        on_round: Callable[[RoundStats], None] | None = None) -> list[RoundStats]:
    """Simulate one device per partition for ``config.rounds`` rounds; returns a row per round (0 = start).

    ``workdir`` receives the client folders (``clients/``) and one model file
    per round (``models/``) unless ``config.out_dir`` says otherwise.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Flower's Ray workers import TF when it is installed
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs here: silences Ray's notice
    from flwr.simulation import run_simulation

    from .client_app import make_client_app
    from .server_app import make_server_app

    workdir = Path(workdir)
    clients_dir = workdir / "clients"
    write_partitions(partitions, clients_dir)
    config = replace(config, out_dir=config.out_dir or str(workdir / "models"))
    eval_lines = pooled_heldout(partitions, config.eval_targets)
    rows: list[RoundStats] = []

    def record(stats: RoundStats) -> None:
        rows.append(stats)
        if on_round is not None:
            on_round(stats)

    client_app = make_client_app({"model": config.model, "partitions-dir": str(clients_dir)})
    server_app = make_server_app(config, eval_lines, record)
    backend: dict[str, dict[str, Any]] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False}}
    with _quiet_flower():
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(partitions),
                       backend_config=backend)
    if len(rows) != config.rounds + 1:
        raise RuntimeError(f"the simulation stopped after {max(len(rows) - 1, 0)} of {config.rounds} rounds "
                           "(run with FLWR_LOG_LEVEL=INFO to see Flower's log)")
    return rows


class _quiet_flower:
    """Flower logs every protocol stage at INFO; the CLI shows a table instead."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("flwr")
        self.level = self.logger.level
        self.logger.setLevel(os.environ.get("FLWR_LOG_LEVEL", "WARNING"))

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)


COLUMNS = ("round", "global top-1", "global top-3", "device: global", "device: personal", "devices", "rejected",
           "failed", "epsilon", "seconds")


def format_row(s: RoundStats) -> tuple[str, ...]:
    """A table row: percentages, counts, and '-' for what a round did not measure."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    rejected = sum(s.rejected.values())
    return (str(s.round), pct(s.global_top1), pct(s.global_top3), pct(s.device_global_top3), pct(s.personal_top3),
            f"{s.accepted}/{s.sampled}" if s.round else "-", str(rejected) if s.round else "-",
            str(s.failures) if s.round else "-", "-" if s.epsilon is None else f"{s.epsilon:.2f}",
            f"{s.seconds:.0f}")


class RoundTable:
    """Prints the header once, then one aligned row per finished round.

    "global" columns: the round's global model on the pooled held-out text of
    all clients (server). "device" columns: the mean over devices, on each
    device's own held-out text, of the global model it received and of its
    locally trained (personalized) head.
    """

    WIDTHS = (5, 12, 12, 14, 16, 9, 8, 6, 8, 7)

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started = False

    def __call__(self, stats: RoundStats) -> None:
        if not self.started:
            self._line(COLUMNS)
            self.started = True
        self._line(format_row(stats))

    def _line(self, cells: tuple[str, ...]) -> None:
        self.out.write("  ".join(c.rjust(w) for c, w in zip(cells, self.WIDTHS)) + "\n")
        self.out.flush()


def plot(rows: list[RoundStats], path: str | Path) -> None:
    """Global and mean personalized top-3 per round, as a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("the plot needs matplotlib, which the flower extra installs: "
                           "pip install 'edgekit[flower]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [r.round for r in rows]
    ax.plot(rounds, [_pct(r.global_top3) for r in rows], marker="o", label="global model, pooled held-out text")
    for attr, label, marker in (("device_global_top3", "global model on each device's text (mean)", "^"),
                                ("personal_top3", "personalized on each device (mean)", "s")):
        points = [(r.round, _pct(getattr(r, attr))) for r in rows if getattr(r, attr) is not None]
        if points:
            ax.plot(*zip(*points), marker=marker, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("top-3 accuracy (%)")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(v: float | None) -> float:
    """A percentage; NaN (a gap in the plot) for what a round did not measure."""
    return math.nan if v is None else 100 * v
