"""A small *trained* model for device tests: it must have learned something,
or "personalization helps" and "never worse" would prove nothing.

Base language: sentences over words w0..w59 following one rule. The user's
language (a style shift): other words in another order, plus a name the
base vocabulary lacks.
"""
from __future__ import annotations

import numpy as np

CONTEXT = 4


def base_lines(n: int, seed: int = 0) -> list[str]:
    """Base style: w_i w_{i+1} w_{i+2} ... (counting up by one)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start, length = rng.integers(0, 50), rng.integers(4, 9)
        out.append(" ".join(f"w{(start + j) % 60}" for j in range(length)) + ".")
    return out


def user_lines(n: int, seed: int = 1) -> list[str]:
    """The user's style: counting down by three, and greeting "zorblax" often."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start, length = rng.integers(60, 120), rng.integers(4, 9)
        words = [f"w{(start - 3 * j) % 120 + 60}" for j in range(length)]
        if rng.random() < 0.5:
            words = ["hi", "zorblax"] + words
        out.append(" ".join(words) + ".")
    return out


def train_tiny(vocab, epochs: int = 6, seed: int = 0):
    """A tiny model of the real architecture, trained for seconds on base_lines."""
    import keras

    from edgekit.converters.keras_model import build_model
    from edgekit.metrics import iter_windows
    from edgekit.tokenizer import Tokenizer

    keras.utils.set_random_seed(seed)
    model = build_model(len(vocab), context_length=CONTEXT, embed_dim=16, hidden=32, feature_dim=24)
    windows = list(iter_windows(Tokenizer().iter_lines(base_lines(400)), vocab, CONTEXT))
    x = np.stack([w.context for w in windows])
    y = np.array([w.target for w in windows])
    trainer = keras.Model(model.input, model.outputs[1])
    trainer.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trainer.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def device_vocab():
    from edgekit.tokenizer import SPECIAL_TOKENS
    from edgekit.vocab import Vocabulary, personal_slot_name

    words = [f"w{i}" for i in range(180)] + ["hi"]
    return Vocabulary(list(SPECIAL_TOKENS) + words + [personal_slot_name(i) for i in range(4)], 4)
