"""The training checkpoint of ``edgekit train-base``: what it holds, and stopping cleanly to write one.

A checkpoint is one ``.npz`` written atomically: the weights, Adam's
variables (its step count included) and a JSON state (configuration, data
hashes, ``Progress``). A run resumed from it ends with the same weights as an
uninterrupted one; a checkpoint made with another configuration or other
data is refused with what differs.
"""
from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekit.atomic import atomic_path

CHECKPOINT_DIR_NAME = "train-base-checkpoint"  # under --out unless --checkpoint-dir; ignored by git
CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_FORMAT = 1


@dataclass
class Progress:
    """Where a run stands; saved in the checkpoint as JSON (floats kept exact by repr)."""

    epoch: int = 0
    step: int = 0  # next step within the epoch
    global_step: int = 0
    loss_sum: float = 0.0  # this epoch's batch losses so far (weighted by batch size)
    loss_count: int = 0
    seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": [], "val_loss": []})


class StopSignals:
    """Turns the first Ctrl-C / SIGTERM into "stop after this step" (a second Ctrl-C aborts at once).

    Stopping between steps keeps weights, optimizer state and position
    consistent, so the checkpoint written on the way out resumes exactly.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        click.echo(f"\n{self.received}: saving a checkpoint after this step (Ctrl-C again to abort without one)",
                   err=True)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {int(seconds % 60):02d} s"


def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    """Weights, Adam's variables (its step count included) and the JSON state, in one file written atomically."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays |= {f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
    arrays["state"] = np.array(json.dumps(state))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_checkpoint(path: Path, model, optimizer, expect: dict) -> Progress:
    """Restore a checkpoint made by the same configuration and data, or say why it cannot be used."""
    with np.load(path) as saved:
        state = json.loads(str(saved["state"]))
        for key in ("config", "data"):
            if state.get(key) != expect[key]:
                differs = sorted(k for k in set(state.get(key) or {}) | set(expect[key])
                                 if (state.get(key) or {}).get(k) != expect[key].get(k))
                raise click.UsageError(
                    f"{path} was made with a different {key} ({', '.join(map(str, differs[:6]))} differ); "
                    "rerun with --fresh to start over, or pass another --checkpoint-dir")
        model.set_weights([saved[f"w{i}"] for i in range(len(model.get_weights()))])
        for i, v in enumerate(optimizer.variables):
            v.assign(saved[f"o{i}"])
    return Progress(**state["progress"])
