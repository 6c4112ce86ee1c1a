"""``edgekit simulate``: federated rounds over many simulated devices (Flower simulation engine).

Flower is imported inside the command, so ``edgekit --help`` stays light
(``edgekit.flower.settings`` does not import it).
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import click

from ..federated import DEFAULT_CLIP_NORM, MODES
from ..flower.settings import DEFAULT_CENTRAL_NOISE, FederationConfig
from .common import CENTRAL_NOISE_HELP, LOCAL_NOISE_HELP, NON_NEGATIVE, OUT_FOLDER, POSITIVE, model_option, out_option

# Corpora are not packaged: the default is the checkout's data/personal, found
# from this file so that the command works from any folder.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "personal"
# Devices sampled per round when --fraction is not given: a round holds its cohort's deltas in memory.
DEFAULT_COHORT = 100
# Below this cohort central DP's noise costs more than a round gains (benchmarks/bench_dp_scale.py).
SMALL_DP_COHORT = 1000


@click.command()
@click.option("--clients", type=click.IntRange(2), default=20, show_default=True, help="Simulated devices.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@model_option("Starting model file [default: the bundled model].", exists=True)
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Corpora folder: every *.txt in it is one writer (email, SMS, a novel...) [default: data/personal "
                   "of the source checkout: SMS the base model never saw, a population with something to teach "
                   "it; the checkout's data/ mixes in the base model's own training text].")
@click.option("--words", type=click.IntRange(20), default=1500, show_default=True,
              help="Training text per device, in words (held-out: a fifth of that, right after).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Share of devices sampled each round [default: all of them up to 100 devices, else a cohort of "
                   "100]. Memory grows with the cohort, not with --clients.")
@click.option("--mode", "aggregation", type=click.Choice(MODES), default=FederationConfig.aggregation,
              show_default=True,
              help="fedavg: the mean (each device counts once under SecAgg+ or central DP, else weighted by its "
                   "examples); median / trimmed-mean resist poisoned updates.")
@click.option("--secure/--no-secure", default=None,
              help="SecAgg+: the server only sees the sum of the deltas [default: on with fedavg; the robust "
                   "modes need individual deltas].")
@click.option("--clip-norm", type=POSITIVE, default=FederationConfig.clip_norm, show_default=True,
              help=f"L2 bound of each device's delta. Below export-update's {DEFAULT_CLIP_NORM:g}: a round trains "
                   "less than a full personalize, and a looser bound would only add noise with DP on.")
@click.option("--noise-multiplier", type=NON_NEGATIVE, default=0.0, show_default=True, help=LOCAL_NOISE_HELP)
@click.option("--central-noise-multiplier", type=NON_NEGATIVE, default=None,
              help=CENTRAL_NOISE_HELP + f" [default: {DEFAULT_CENTRAL_NOISE:g} with fedavg and no local noise, "
                   "else 0]. Epsilon per round and in all is written beside each model version.")
@click.option("--adaptive-clipping/--fixed-clipping", default=True, show_default=True,
              help="With central DP, move the clip bound toward the median of the devices' delta norms "
                   "(its noisy count is accounted).")
@click.option("--delta", "dp_delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=FederationConfig.dp_delta, show_default=True, help="Delta of every epsilon reported.")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True, help="Local epochs per round.")
@click.option("--cpus", type=click.IntRange(1), default=2, show_default=True, help="CPUs for the simulation.")
@out_option("Keep client folders and one model file per round in this folder [default: a temporary folder].",
            type=OUT_FOLDER)
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The server's signing key (`edgekit keygen`'s .signing.key; passphrase from "
                   "$EDGEKIT_KEY_PASSPHRASE) [default: a new pair in the output folder, server.signing.key/.pub].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write top-3 per round as a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the rounds as JSON instead of a table.")
def simulate(clients, rounds, model_path, data_dir, words, fraction, aggregation, secure, clip_norm, noise_multiplier,
             central_noise_multiplier, adaptive_clipping, dp_delta, epochs, cpus, out, signing_key, plot_path, as_json):
    """Run federated rounds with one simulated device per writer of the corpora.

    Every round's version is signed, so `edgekit install` takes it: verify
    with the public half of --signing-key (or OUT/server.signing.pub).
    """
    from ..model import default_model_path

    model_path = model_path or default_model_path()
    if not model_path.exists():
        raise click.ClickException(f"{model_path}: no such model file (pass -m/--model)")
    if data_dir is None:
        data_dir = DEFAULT_DATA
        if not data_dir.is_dir():
            raise click.ClickException(f"{data_dir}: not found; the corpora ship with a source checkout "
                                       "(pip install -e '.[flower]' from one), or pass --data FOLDER")
    from ..flower import partitions as parts  # Flower loads here, after the quick checks
    from ..flower import simulate as sim
    from ..progress import progress_bar

    try:
        config = FederationConfig(model=str(model_path), rounds=rounds,
                                  fraction=fraction or min(1.0, DEFAULT_COHORT / clients), aggregation=aggregation,
                                  secure=secure, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                                  central_noise_multiplier=central_noise_multiplier,
                                  adaptive_clipping=adaptive_clipping, dp_delta=dp_delta, epochs=epochs, min_clients=2,
                                  signing_key=str(signing_key.resolve()) if signing_key else "")
        sources = parts.text_sources(data_dir)
        if signing_key:  # a wrong key or passphrase, said now rather than from inside Flower's log
            from ..federated.keys import load_signing_key, read_passphrase

            load_signing_key(signing_key, read_passphrase())
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    partitions = parts.make_partitions(sources, clients, train_words=words, heldout_words=max(words // 5, 10))
    cohort = max(int(clients * config.fraction), 2)
    if config.central_dp and cohort < SMALL_DP_COHORT:
        z = config.central_noise_multiplier
        click.echo(f"note: central DP on a cohort of {cohort} devices: its noise (std {z:g} x clip / {cohort} "
                   f"on each of the head's values) outweighs what a round learns below a few "
                   f"thousand devices (README: What DP costs at scale); --central-noise-multiplier 0 turns it off",
                   err=True)
    table = sim.RoundTable()
    with tempfile.TemporaryDirectory(prefix="edgekit-simulate-") as tmp, \
            progress_bar(rounds + 1, "rounds", enabled=not as_json) as bar:
        def on_round(stats):
            if not as_json:
                if sys.stderr.isatty():
                    sys.stderr.write("\r\033[K")  # the table row replaces the bar's line
                table(stats)
            bar.update(1)

        try:
            rows = sim.run(config, partitions, out or tmp, cpus=cpus, on_round=on_round)
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        if plot_path:
            sim.plot(rows, plot_path)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=1))
    if plot_path:
        click.echo(f"plot: {plot_path}", err=True)
    if out and not signing_key:
        click.echo(f"versions signed with a new key: devices verify them with {out / 'server.signing.pub'}", err=True)
