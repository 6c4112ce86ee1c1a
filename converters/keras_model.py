"""The Keras next-word model, and loading the bundled default model.

Contract (docs/design.md): ``tokens [batch, context_length] int32 ->
(features [batch, F], logits [batch, V])``. The device retrains only the last
Dense ("head") on ``features``, so the head must be a plain Dense on the
feature output and logits must be raw (no softmax).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.vocab import Vocabulary

from . import checkout_folder, require_checkout

MODELS_DIR: Path | None = checkout_folder("models")  # None outside a source checkout
MODEL_FILE = "edgekit-en.keras"
VOCAB_FILE = "vocab.txt"
TRAINING_FILE = "training.json"
CELLS = ("lstm", "gru")  # the recurrent layers build_model knows (and `train-base --cell` offers)


def build_model(
    vocab_size: int,
    context_length: int = 16,
    embed_dim: int = 64,
    hidden: int = 192,
    feature_dim: int = 64,
    cell: str = "lstm",
):
    """Embedding -> LSTM/GRU -> Dense "features" (tanh) -> Dense "head" (logits).

    The recurrent layer is unrolled because a TFLite WHILE loop cannot be
    fully int8-quantized; with a short fixed context the unrolled graph is
    also faster on a phone.
    """
    import keras

    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    recurrent = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    tokens = keras.Input(shape=(context_length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")(tokens)
    x = recurrent(hidden, unroll=True, name=cell)(x)
    features = keras.layers.Dense(feature_dim, activation="tanh", name="features")(x)
    logits = keras.layers.Dense(vocab_size, name="head")(features)
    return keras.Model(tokens, [features, logits], name="edgekit_next_word")


def compile_for_training(model, learning_rate=2e-3) -> None:
    """Cross-entropy on the logits output only; features are not a training target.

    ``learning_rate`` is a float or a Keras schedule.
    """
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
        loss=[None, loss],
    )


def load_base_model(path: Path | str | None = None) -> tuple[Any, Vocabulary, dict]:
    """``(keras.Model, Vocabulary, config)`` of a trained model directory (default: bundled).

    ``path`` is a directory holding ``edgekit-en.keras``, ``vocab.txt`` and
    ``training.json`` (what ``train-base`` writes), or the ``.keras`` file itself;
    the default, the checkout's ``models/``, raises :class:`CheckoutFolderMissing` without one.
    """
    path = Path(path) if path else require_checkout(MODELS_DIR, "path")
    import keras

    model_file = path if path.is_file() else path / MODEL_FILE
    info = json.loads((model_file.parent / TRAINING_FILE).read_text(encoding="utf-8"))
    config = info["config"]
    vocab = Vocabulary.load(model_file.parent / VOCAB_FILE)
    model = keras.models.load_model(model_file, compile=False)
    return model, vocab, config
