"""What a device computes in a round, without Flower: local head training, its delta, scores.

The pieces are the device runtime's own (LiteRT features from
``EdgeModel.features_logits``, numpy ``personalize.train_head``,
``metrics.evaluate``), so a simulated round costs what a device's does.
"""
from __future__ import annotations

import numpy as np

from ..blas import blas_threads
from ..head import Weights
from ..metrics import evaluate as evaluate_scorer
from ..metrics import iter_windows
from ..model import EdgeModel
from ..personal.train import TrainConfig, softmax, train_head


def train_head_locally(model: EdgeModel, lines: list[str], config: TrainConfig) -> tuple[Weights, int]:
    """FedAvg's client step: train the global head on this device's text; ``(new head, examples)``.

    The same numpy training as ``EdgeModel.personalize``, without its
    adoption gate and phrase memory: those decide what the *device* shows
    its user, while the federation needs every device's gradient signal.
    """
    windows = [w for w in iter_windows(model.tokenizer.iter_lines(lines), model.vocab, model.context_length)
               if model.vocab.is_word_id(w.target)]
    if not windows:
        raise ValueError("no text to learn from: the device's text has no known words")
    features, _ = model.features_logits(np.stack([w.context for w in windows]))
    targets = np.array([w.target for w in windows], np.int64)
    with blas_threads(config.threads):  # see edgekit/blas.py: default BLAS threads stall a busy box
        return train_head(features, targets, *model.base_head, config), len(targets)


def head_scores(model: EdgeModel, head: Weights, lines: list[str], max_targets: int | None = None) -> dict:
    """top-1/top-3/perplexity of the model's body with ``head`` computed on the host, on ``lines``.

    Server and devices score every head this way, the starting one included:
    the interpreter's own (quantized) head would give the starting version a
    different arithmetic from every later one, and its change would be
    mistaken for the effect of a round.
    """
    def scorer(ids: np.ndarray) -> np.ndarray:
        features, _ = model.features_logits(ids)
        with blas_threads(1):
            return softmax(features @ head[0] + head[1])

    return evaluate_scorer(scorer, model.vocab, model.tokenizer.iter_lines(lines), model.context_length,
                           max_targets=max_targets).to_dict()
