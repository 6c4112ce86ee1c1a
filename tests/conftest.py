"""Shared fixtures: a tiny next-word model (untrained, random head) and text for it.

Keras/TensorFlow are imported inside fixtures so that collecting tests stays
fast and device-only tests never pay for TensorFlow.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

TINY = dict(context_length=4, embed_dim=8, hidden=16, feature_dim=12)
N_WORDS, PERSONAL_SLOTS = 250, 4  # head 12 x 259 > 1024 weights: big enough to be quantized


@pytest.fixture(scope="session")
def tiny_vocab():
    from edgekit.tokenizer import SPECIAL_TOKENS
    from edgekit.vocab import Vocabulary, personal_slot_name

    words = [f"w{i}" for i in range(N_WORDS)]
    return Vocabulary(list(SPECIAL_TOKENS) + words + [personal_slot_name(i) for i in range(PERSONAL_SLOTS)],
                      PERSONAL_SLOTS)


def make_tiny_model(vocab, seed: int = 0, random_head: bool = True):
    """The real architecture at toy size; a random head with a non-zero bias unless told otherwise."""
    import keras

    from edgekit.converters.keras_model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(len(vocab), **TINY)
    if random_head:
        head = model.get_layer("head")
        rng = np.random.default_rng(seed)
        head.set_weights([rng.normal(0, 0.5, head.kernel.shape).astype("f4"),
                          rng.normal(0, 0.5, head.bias.shape).astype("f4")])
    return model


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_vocab):
    """Fresh tiny models (same seed -> same weights), for tests that change them."""
    return functools.partial(make_tiny_model, tiny_vocab)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory):
    return tiny_model_factory()


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory, tiny_vocab):
    """Sentences of vocabulary words (plus a few unknown ones), one per line."""
    rng = np.random.default_rng(1)
    words = [t for t in tiny_vocab.tokens[5:tiny_vocab.first_slot]] + ["zzunknown"]
    lines = [" ".join(rng.choice(words, rng.integers(3, 10))) + "." for _ in range(60)]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_keras_dir(tmp_path_factory, tiny_model, tiny_vocab):
    """A model folder as a user would have it: ``model.keras`` + ``vocab.txt``."""
    folder = tmp_path_factory.mktemp("keras")
    tiny_model.save(folder / "model.keras")
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab.tokens) + "\n", encoding="utf-8")
    return folder
