"""Score the float Keras model with the same metrics as a converted file.

The conversion report compares each ``.tflite`` with the Keras model it came
from; both go through ``edgekit.metrics.evaluate`` so the numbers differ only
by what conversion changed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import keras
import numpy as np

from edgekit.metrics import Evaluation, evaluate
from edgekit.tokenizer import Tokenizer, TokenizerConfig, read_text_lines
from edgekit.vocab import Vocabulary

from .contract import context_length_of, contract_model


def keras_scorer(model: keras.Model, vocab: Vocabulary) -> Callable[[np.ndarray], np.ndarray]:
    """Context ids ``[N, T]`` -> next-word probabilities ``[N, V]`` (softmax of the logits)."""
    import tensorflow as tf

    model = contract_model(model, vocab)
    spec = tf.TensorSpec([None, context_length_of(model)], tf.int32)
    # One traced graph for every batch size: eager calls are several times slower.
    logits_of = tf.function(lambda ids: model(ids, training=False)[1], input_signature=[spec])

    def score(ids: np.ndarray) -> np.ndarray:
        return tf.nn.softmax(logits_of(np.asarray(ids, np.int32))).numpy()

    return score


def evaluate_keras(model: keras.Model, vocab: Vocabulary, text: str | Path, max_targets: int | None = None,
                   tokenizer_config: TokenizerConfig | None = None, progress: bool = False,
                   label: str = "keras float32") -> Evaluation:
    """top1, top3, perplexity, keystroke savings of a Keras model on a UTF-8 text file."""
    model = contract_model(model, vocab)
    lines = Tokenizer(tokenizer_config).iter_lines(read_text_lines(text))
    return evaluate(keras_scorer(model, vocab), vocab, lines, context_length_of(model),
                    max_targets=max_targets, progress=progress, label=label)
