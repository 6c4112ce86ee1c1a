"""``edgekit train-base``: rebuild the bundled English model from the checkout's data/ (TensorFlow).

The options live here; the training in ``edgekit.converters.train_base``.
"""
from __future__ import annotations

import importlib.util
import json
from typing import Any
from pathlib import Path

import click

from ..converters import CheckoutFolderMissing, corpus, keras_model, require_checkout
from ..converters.keras_model import CELLS
from ..converters.train_base import TrainConfig, train
from .common import OUT_FOLDER, POSITIVE, out_option

_COUNT = click.IntRange(min=1)


@click.command("train-base")
@out_option("Output folder (default: the source checkout's models/).", type=OUT_FOLDER, default=None)
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="cleaned corpora (default: the source checkout's data/)")
@click.option("--epochs", type=_COUNT, default=TrainConfig.epochs, show_default=True)
@click.option("--max-minutes", type=POSITIVE, default=TrainConfig.max_minutes, show_default=True, help="stop training after this long")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--vocab-size", type=_COUNT, default=TrainConfig.vocab_size, show_default=True, help="words, without specials and personal slots")
@click.option("--context-length", type=_COUNT, default=TrainConfig.context_length, show_default=True)
@click.option("--embed-dim", type=_COUNT, default=TrainConfig.embed_dim, show_default=True)
@click.option("--hidden", type=_COUNT, default=TrainConfig.hidden, show_default=True)
@click.option("--feature-dim", type=_COUNT, default=TrainConfig.feature_dim, show_default=True)
@click.option("--cell", type=click.Choice(CELLS), default=TrainConfig.cell, show_default=True)
@click.option("--batch-size", type=_COUNT, default=TrainConfig.batch_size, show_default=True)
@click.option("--learning-rate", type=POSITIVE, default=TrainConfig.learning_rate, show_default=True)
@click.option("--max-examples", type=click.IntRange(min=0), default=0, help="train on this many windows only (0 = all)")
def train_base(out: Path | None, data_dir: str | None, **sizes: Any) -> None:
    """Train the default English next-word model from data/ (needs TensorFlow)."""
    try:
        data = Path(data_dir) if data_dir else require_checkout(corpus.DATA_DIR, "--data-dir")
        folder = out or require_checkout(keras_model.MODELS_DIR, "--out", exists=False)
    except CheckoutFolderMissing as e:
        raise click.UsageError(str(e)) from None
    if importlib.util.find_spec("keras") is None:  # fail now, not after a minute of data preparation
        raise ModuleNotFoundError("No module named 'keras'", name="keras")

    record = train(TrainConfig(**sizes), folder, data)
    click.echo(json.dumps({k: record[k] for k in ("seconds", "train_loss", "heldout")}, indent=2))
