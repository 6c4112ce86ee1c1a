"""``edgekit train-base``: rebuild the bundled English model from the checkout's data/ (TensorFlow).

The options live here; the training, resumable from its checkpoint, in
``edgekit.converters.train_base``.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from ..converters import CheckoutFolderMissing, corpus, keras_model, require_checkout
from ..converters.keras_model import CELLS
from ..converters.train_base import CHECKPOINT_DIR_NAME, TrainConfig, train
from .common import NON_NEGATIVE, OUT_FOLDER, POSITIVE, out_option

_COUNT = click.IntRange(min=1)


@click.command("train-base")
@out_option("Output folder (default: the source checkout's models/).", type=OUT_FOLDER, default=None)
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="cleaned corpora (default: the source checkout's data/)")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"where to checkpoint and resume from (default: OUT/{CHECKPOINT_DIR_NAME})")
@click.option("--fresh", is_flag=True, help="ignore an existing checkpoint and start over")
@click.option("--checkpoint-minutes", type=POSITIVE, default=5.0, show_default=True,
              help="checkpoint this often (and at every epoch end)")
@click.option("--max-minutes", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="stop this run after this long, with a checkpoint to continue from (0 = no limit)")
@click.option("--max-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="stop this run after this many steps, with a checkpoint (0 = no limit)")
@click.option("--epochs", type=_COUNT, default=TrainConfig.epochs, show_default=True)
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--vocab-size", type=_COUNT, default=TrainConfig.vocab_size, show_default=True,
              help="words, without specials and personal slots")
@click.option("--context-length", type=_COUNT, default=TrainConfig.context_length, show_default=True)
@click.option("--embed-dim", type=_COUNT, default=TrainConfig.embed_dim, show_default=True)
@click.option("--hidden", type=_COUNT, default=TrainConfig.hidden, show_default=True)
@click.option("--feature-dim", type=_COUNT, default=TrainConfig.feature_dim, show_default=True)
@click.option("--cell", type=click.Choice(CELLS), default=TrainConfig.cell, show_default=True)
@click.option("--batch-size", type=_COUNT, default=TrainConfig.batch_size, show_default=True)
@click.option("--learning-rate", type=POSITIVE, default=TrainConfig.learning_rate, show_default=True)
@click.option("--sources", default=",".join(TrainConfig.sources), show_default=True,
              help="comma-separated corpus sources (data/train/<source>.txt.xz), in vocabulary order")
@click.option("--valid-windows", type=click.IntRange(min=0), default=TrainConfig.valid_windows, show_default=True,
              help="validation windows, evenly spaced over the validation splits (0 = all)")
@click.option("--max-examples", type=click.IntRange(min=0), default=0, help="train on this many windows only (0 = all)")
def train_base(out: Path | None, data_dir: Path | None, checkpoint_dir: Path | None, fresh: bool,
               checkpoint_minutes: float, max_minutes: float, max_steps: int, sources: str, **sizes: Any) -> None:
    """Train the default English next-word model from data/ (needs TensorFlow); resumable.

    Stopped by Ctrl-C, SIGTERM or a limit, it saves a checkpoint; the same
    command continues from it and gives the same model as an uninterrupted run.
    """
    try:
        data = data_dir or require_checkout(corpus.DATA_DIR, "--data-dir")
        folder = out or require_checkout(keras_model.MODELS_DIR, "--out", exists=False)
    except CheckoutFolderMissing as e:
        raise click.UsageError(str(e)) from None
    if importlib.util.find_spec("keras") is None:  # fail now, not after a minute of data preparation
        raise ModuleNotFoundError("No module named 'keras'", name="keras")
    config = TrainConfig(sources=tuple(s.strip() for s in sources.split(",") if s.strip()), **sizes)
    try:
        record = train(config, folder, data, checkpoint_dir=checkpoint_dir, fresh=fresh, max_minutes=max_minutes,
                       max_steps=max_steps, checkpoint_minutes=checkpoint_minutes)
    except ValueError as e:  # an unknown source, an unreadable data file
        raise click.UsageError(str(e)) from None
    if not record["finished"]:
        raise SystemExit(130 if record["stopped_because"] in ("SIGINT", "SIGTERM") else 3)
    click.echo(json.dumps({k: record[k] for k in ("seconds", "train_loss", "val_loss", "heldout")}, indent=2))
