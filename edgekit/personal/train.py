"""Training the last layer on the device, in numpy.

The body (embedding + recurrent layers) stays frozen inside the ``.tflite``
whatever its quantization; the interpreter only supplies features. The float
head (softmax regression over the vocabulary) trains here with Adam on
softmax cross-entropy. Measured on this project: numpy steps on interpreter
features beat training inside the ``.tflite`` and work with an int8 body.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import progress_bar


@dataclass
class TrainConfig:
    """Defaults chosen on SMS and Austen personal splits (see README)."""

    epochs: int = 4
    min_steps: int = 150  # small texts still get enough optimizer steps to move the head
    batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4  # pulls the head back toward where it started
    holdout_every: int = 5  # every 5th line is held out to decide adoption
    min_word_count: int = 2  # an unknown word seen this often gets a personal slot
    max_lines: int = 50_000  # bounded memory on huge personal text: lines read, and tokens kept,
    max_tokens: int = 1_000_000  # at most (a line over 8,192 characters counts as one line per piece)
    seed: int = 0
    # BLAS threads while learning. One leaves the other cores to the app, and on
    # a busy 2-core box single-threaded steps were 3x faster than OpenBLAS's
    # default threading (which spins while competing with other work).
    threads: int | None = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def train_head(features: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray,
               config: TrainConfig, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Adam on softmax cross-entropy; returns new ``(weight [F, V], bias [V])``."""
    w, b = weight.copy(), bias.copy()
    w0, b0 = weight, bias
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    rng = np.random.default_rng(config.seed)
    n, bs = len(targets), config.batch_size
    steps_per_epoch = max(1, -(-n // bs))
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
    with progress_bar(epochs * steps_per_epoch, "personalizing", progress) as bar:
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                f = features[idx]
                g = softmax(f @ w + b)
                g[np.arange(len(idx)), targets[idx]] -= 1.0
                g /= len(idx)
                gw = f.T @ g + config.weight_decay * (w - w0)
                gb = g.sum(axis=0) + config.weight_decay * (b - b0)
                t += 1
                lr = config.learning_rate * np.sqrt(1 - beta2**t) / (1 - beta1**t)
                for p, m, v, grad in ((w, mw, vw, gw), (b, mb, vb, gb)):
                    m *= beta1
                    m += (1 - beta1) * grad
                    v *= beta2
                    v += (1 - beta2) * grad * grad
                    p -= lr * m / (np.sqrt(v) + eps)
                bar.update(1)
    return w, b


def score_options(features: np.ndarray, contexts: np.ndarray, targets: np.ndarray, options: list,
                  mask: np.ndarray, chunk: int = 128) -> list[tuple[float, float, float]]:
    """(top-1, top-3, mean NLL) on held-out examples for each ``(head, memory, weight)`` option.

    Works in row chunks so memory stays ``O(chunk x V)``; each distinct head
    and memory is evaluated once per chunk, then only mixed per weight.
    """
    totals = np.zeros((len(options), 3))
    for start in range(0, len(targets), chunk):
        sl = slice(start, start + chunk)
        f, ctx, y = features[sl], contexts[sl], targets[sl]
        heads = {id(h): h for h, _, _ in options}
        memories = {id(m): m for _, m, _ in options}
        neural = {k: softmax(f @ h[0] + h[1]) for k, h in heads.items()}
        memory = {k: (m.probs_batch(ctx), m.evidence_batch(ctx)) for k, m in memories.items()}
        for i, (h, m, w) in enumerate(options):
            p, (mp, ev) = neural[id(h)], memory[id(m)]
            lam = (w * ev / (ev + 1.0))[:, None]
            totals[i] += _hits(p if w <= 0 else (1 - lam) * p + lam * mp, y, mask)
    return [tuple(float(v) / len(targets) for v in t) for t in totals]


def _hits(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Summed (top-1 hits, top-3 hits, NLL) of a chunk."""
    p_t = probs[np.arange(len(targets)), targets]
    better = (probs[:, mask] > p_t[:, None]).sum(axis=1)
    return np.array([(better < 1).sum(), (better < 3).sum(), -np.log(np.maximum(p_t, 1e-12)).sum()])
