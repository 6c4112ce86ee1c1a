"""The Keras next-word model, and loading the bundled default model.

Contract (docs/design.md): ``tokens [batch, context_length] int32 ->
(features [batch, F], logits [batch, V])``. The device retrains only the last
Dense ("head") on ``features``, so the head must be a plain Dense on the
feature output and logits must be raw (no softmax).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from edgekit.vocab import Vocabulary

from . import checkout_folder, require_checkout

MODELS_DIR: Path | None = checkout_folder("models")  # None outside a source checkout
MODEL_FILE = "edgekit-en.keras"
VOCAB_FILE = "vocab.txt"
TRAINING_FILE = "training.json"
CELLS = ("lstm", "gru", "cifg")  # the recurrent layers build_model knows (and `train-base --cell` offers)


def build_model(
    vocab_size: int,
    context_length: int = 16,
    embed_dim: int = 64,
    hidden: int = 192,
    feature_dim: int = 64,
    cell: str = "lstm",
):
    """Embedding -> LSTM/GRU/CIFG -> Dense "features" (tanh) -> Dense "head" (logits).

    The recurrent layer is unrolled because a TFLite WHILE loop cannot be
    fully int8-quantized; with a short fixed context the unrolled graph is
    also faster on a phone.
    """
    import keras

    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    recurrent = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
                 "cifg": lambda units, **kw: keras.layers.RNN(cifg_cell_class()(units), **kw)}[cell]
    tokens = keras.Input(shape=(context_length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")(tokens)
    x = recurrent(hidden, unroll=True, name=cell)(x)
    features = keras.layers.Dense(feature_dim, activation="tanh", name="features")(x)
    logits = keras.layers.Dense(vocab_size, name="head")(features)
    return keras.Model(tokens, [features, logits], name="edgekit_next_word")


@functools.cache
def cifg_cell_class():
    """The CIFG cell (LSTM with coupled input and forget gates), registered for Keras saving.

    Gboard's federated model used it (Hard et al. 2018): the input gate is
    ``1 - forget``, so three gate matrices instead of four, a quarter fewer
    recurrent parameters and multiply-adds than an LSTM of the same width.
    Built from matmuls and elementwise ops only, so it converts to TFLite
    builtins like the unrolled LSTM. Defined on first use: TensorFlow is
    imported lazily in this package.
    """
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="edgekit")
    class CIFGCell(keras.layers.Layer):
        def __init__(self, units: int, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = [units, units]
            self.output_size = units

        def build(self, input_shape):
            u = self.units
            self.kernel = self.add_weight(shape=(input_shape[-1], 3 * u), initializer="glorot_uniform", name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(u, 3 * u), initializer="orthogonal", name="recurrent_kernel")
            # forget gate bias 1 (as Keras' LSTM unit_forget_bias): remember by default at the start
            self.bias = self.add_weight(shape=(3 * u,), name="bias", initializer=keras.initializers.Constant(
                [1.0] * u + [0.0] * (2 * u)))

        def call(self, inputs, states):
            h, c = states
            z = ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias
            forget, candidate, out = ops.split(z, 3, axis=-1)
            forget = ops.sigmoid(forget)
            c = forget * c + (1.0 - forget) * ops.tanh(candidate)
            h = ops.sigmoid(out) * ops.tanh(c)
            return h, [h, c]

        def get_config(self):
            return super().get_config() | {"units": self.units}

    return CIFGCell


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
    import keras

    path = Path(path) if path else require_checkout(MODELS_DIR, "path")
    model_file = path if path.is_file() else path / MODEL_FILE
    cifg_cell_class()  # registered before loading, in case the model uses it
    info = json.loads((model_file.parent / TRAINING_FILE).read_text(encoding="utf-8"))
    config = info["config"]
    vocab = Vocabulary.load(model_file.parent / VOCAB_FILE)
    model = keras.models.load_model(model_file, compile=False)
    return model, vocab, config
