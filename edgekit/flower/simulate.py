"""Many simulated devices on one machine with Flower's current simulation runtime.

Flower 1.42 deprecates ``flwr.simulation.run_simulation``; a simulation is a
``flwr run`` of a Flower app on a SuperLink started with ``--simulation``.
``run`` does exactly that, privately: it writes a Flower app folder whose
run config is the ``FederationConfig`` (plus where the partitions and the
server's held-out text are), starts ``flower-superlink --simulation`` on a
free local port with its own ``FLWR_HOME``, runs ``flwr run`` against it, and
stops it. The ServerApp and ClientApp are the deployment's own
(``edgekit.flower.server_app:app``, ``edgekit.flower.client_app:app``); only
the network is missing. The ServerApp runs in Flower's process, so the round
table is read from the ``rounds.jsonl`` it writes beside the model versions.

Keeping 100 clients x 3 rounds within minutes on two cores comes from a few choices:

- each client has about 1,500 words of text (``--words``), and its
  held-out evaluation is capped (``client_app.HELDOUT_TARGETS``);
- worker processes cache the global model (one interpreter per version);
- Ray gets at most ``cpus`` CPUs and one CPU per client, so there are never
  more worker processes than cores;
- the global model is scored once per round on a fixed, capped sample of
  every client's held-out text, on the server.

Memory: a round holds the replies of its sampled cohort (one 2.6 MB delta
each on the bundled model), not of every client, so 1,000 clients with
``fraction = 0.02`` cost what 20 do; clients' text is on disk.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import TextIO

from ..federated.keys import generate_signing_key, signing_key_paths
from .partitions import Partition, take_words, write_partitions
from .rounds import RoundStats, read_rounds
from .settings import FederationConfig

CONNECTION = "edgekit-simulation"
STARTUP_SECONDS = 60.0


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

    ``workdir`` receives the client folders (``clients/``), the Flower app
    and its log (``flower.log``), and one model file per round (``models/``)
    unless ``config.out_dir`` says otherwise. Every version is signed: with
    ``config.signing_key``, else with a new pair made in ``workdir``
    (``server.signing.key``; devices verify with ``server.signing.pub``).
    """
    workdir = Path(workdir).resolve()
    if not config.signing_key:
        config = replace(config, signing_key=str(simulation_signing_key(workdir)))
    clients_dir = workdir / "clients"
    write_partitions(partitions, clients_dir)
    out_dir = Path(config.out_dir or workdir / "models").resolve()
    if (out_dir / "rounds.jsonl").exists():
        raise RuntimeError(f"{out_dir} holds the rounds of an earlier run: choose an empty folder")
    eval_path = workdir / "heldout-pooled.txt"
    eval_path.write_text("\n".join(pooled_heldout(partitions, config.eval_targets)) + "\n", encoding="utf-8")
    config = replace(config, out_dir=str(out_dir), eval_text=str(eval_path))
    app_dir = write_app(workdir / "app", config, {"partitions-dir": str(clients_dir)})
    log_path = workdir / "flower.log"
    federation = (f"num-supernodes={len(partitions)} client-resources-num-cpus=1 client-resources-num-gpus=0 "
                  f"init-args-num-cpus={cpus} init-args-num-gpus=0 init-args-log-to-driver=false")
    rows: list[RoundStats] = []
    with open(log_path, "w", encoding="utf-8") as log, local_superlink(workdir / "flower", log) as env:
        command = [_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream", "--federation-config", federation]
        flwr_run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        while True:
            done = flwr_run.poll() is not None
            for stats in read_rounds(out_dir)[len(rows):]:
                rows.append(stats)
                if on_round is not None:
                    on_round(stats)
            if done:
                break
            time.sleep(0.5)
    if len(rows) != config.rounds + 1:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"the simulation stopped after {max(len(rows) - 1, 0)} of {config.rounds} rounds; "
                           f"Flower's log ({log_path}) ends:\n" + "\n".join(tail))
    return rows


def simulation_signing_key(workdir: Path) -> Path:
    """The simulation's own signing pair in ``workdir`` (made once, kept), as ``edgekit keygen`` makes it."""
    private, public = signing_key_paths(workdir / "server.key")
    if not private.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        generate_signing_key(private, public)
    return private


def write_app(folder: Path, config: FederationConfig, extra: dict[str, str]) -> Path:
    """A Flower app folder: edgekit's installed components, the run config from ``config`` and ``extra``."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {f.name.replace("_", "-"): getattr(config, f.name) for f in fields(config)}
    settings.update(extra)
    lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
    (folder / "pyproject.toml").write_text(APP_TOML.format(config="\n".join(lines)), encoding="utf-8")
    return folder


APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edgekit-simulation"
version = "1.0.0"
description = "edgekit federated rounds, simulated"
license = "Apache-2.0"
dependencies = []  # edgekit is installed where the simulation runs

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "edgekit"

[tool.flwr.app.components]
serverapp = "edgekit.flower.server_app:app"
clientapp = "edgekit.flower.client_app:app"

[tool.flwr.app.config]
{config}
"""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"a run config value must be finite, got {value}")
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


@contextmanager
def local_superlink(home: Path, log: TextIO) -> Iterator[dict[str, str]]:
    """A private ``flower-superlink --simulation`` on a free port; yields the environment to reach it.

    Its own ``FLWR_HOME`` (connection, installed app) keeps the user's
    ``~/.flwr`` untouched, and ``PYTHONPATH`` names the edgekit being run, so
    Flower's processes import the same code as this one. Runtime dependency
    installation is off: nothing is fetched from PyPI.
    """
    port = _free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n', encoding="utf-8")
    env = simulation_env(home)
    command = [_tool("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
               "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"]
    link = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(link, port)
        yield env
    finally:
        _stop(link)


def simulation_env(home: Path) -> dict[str, str]:
    """The environment of Flower's processes: this edgekit first on the path, no telemetry, quiet workers."""
    import edgekit

    env = dict(os.environ)
    code_root = str(Path(edgekit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env.update({"FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "TF_CPP_MIN_LOG_LEVEL": "3",  # Flower's Ray workers import TF when it is installed
                "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})  # no GPUs here: silences Ray's notice
    return env


def _tool(name: str) -> str:
    """A Flower command from this Python's environment (the one edgekit runs in), else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Flower with pip install 'edgekit[flower]'")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(link: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if link.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {link.returncode} (see flower.log)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not answer on port {port} within {STARTUP_SECONDS:.0f} s")


def _stop(link: subprocess.Popen) -> None:
    """Stop the SuperLink and what it started (its session: the simulation process, Ray)."""
    if link.poll() is None:
        os.killpg(link.pid, signal.SIGTERM)
        try:
            link.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(link.pid, signal.SIGKILL)
            link.wait()


COLUMNS = ("round", "global top-1", "global top-3", "device: global", "device: personal", "devices", "rejected",
           "failed", "clip", "epsilon", "seconds")


def format_row(s: RoundStats) -> tuple[str, ...]:
    """A table row: percentages, counts, and '-' for what a round did not measure."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    rejected = sum(s.rejected.values())
    return (str(s.round), pct(s.global_top1), pct(s.global_top3), pct(s.device_global_top3), pct(s.personal_top3),
            f"{s.accepted}/{s.sampled}" if s.round else "-", str(rejected) if s.round else "-",
            str(s.failures) if s.round else "-", "-" if s.clip_norm is None else f"{s.clip_norm:.3g}",
            "-" if s.epsilon is None else f"{s.epsilon:.2f}",
            f"{s.seconds:.0f}")


class RoundTable:
    """Prints the header once, then one aligned row per finished round.

    "global" columns: the round's global model on the pooled held-out text of
    all clients (server). "device" columns: the mean over devices, on each
    device's own held-out text, of the global model it received and of its
    locally trained (personalized) head.
    """

    WIDTHS = (5, 12, 12, 14, 16, 9, 8, 6, 6, 8, 7)

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started = False

    def __call__(self, stats: RoundStats) -> None:
        if not self.started:
            self._line(COLUMNS)
            self.started = True
        self._line(format_row(stats))

    def _line(self, cells: tuple[str, ...]) -> None:
        self.out.write("  ".join(c.rjust(w) for c, w in zip(cells, self.WIDTHS, strict=True)) + "\n")
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
            ax.plot(*zip(*points, strict=True), marker=marker, label=label)
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
