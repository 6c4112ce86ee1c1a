"""Next-word quality: top-1 / top-3 accuracy, perplexity, keystroke savings.

One implementation for every model kind: a *scorer* maps context ids
``[N, T]`` to next-word probabilities ``[N, V]``; the Keras model, the
``.tflite`` file, and a personalized device model are all scorers.

Scoring rules (the same for peers in ``benchmarks/``): targets are the word
tokens of each line, in order (``<s>``, ``</s>``, ``<num>`` are context only);
an out-of-vocabulary target is a miss and is scored as ``<unk>`` for
perplexity; ``max_targets`` takes the first N targets of the text.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import NotEnoughTextError
from .progress import progress_bar
from .tokenizer import BOS, EOS, NUM, PAD
from .vocab import Vocabulary

Scorer = Callable[[np.ndarray], np.ndarray]
NOT_TARGETS = frozenset((PAD, BOS, EOS, NUM))


@dataclass
class Window:
    context: np.ndarray  # [T] int32 ids
    word: str  # the target as typed
    target: int  # its id (unk if out of vocabulary)


def iter_targets(token_lines: Iterable[list[str]], max_targets: int | None = None) -> Iterator[tuple[list[str], str]]:
    """``(tokens before, target word)`` for every scored target, first to last.

    The one scoring rule for edgekit models and for peers in ``benchmarks/``.
    """
    n = 0
    for line in token_lines:
        for i in range(1, len(line)):
            if line[i] in NOT_TARGETS:
                continue
            if max_targets is not None and n >= max_targets:
                return
            yield line[:i], line[i]
            n += 1


def iter_windows(token_lines: Iterable[list[str]], vocab: Vocabulary, context_length: int,
                 max_targets: int | None = None) -> Iterator[Window]:
    """The scored (context ids, target) pairs of a text, first to last."""
    for before, word in iter_targets(token_lines, max_targets):
        yield Window(vocab.context_ids(before, context_length), word, vocab.id_of(word))


def _batches(windows: Iterator[Window], size: int) -> Iterator[list[Window]]:
    batch: list[Window] = []
    for w in windows:
        batch.append(w)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def top_k(probs: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable ids among ``candidates``, best first; ties: the lower id first, as
    ``suggest()`` ranks (an int8 model's scores tie often, and a partition alone would pick among
    tied words at random)."""
    values = probs[candidates]
    if len(candidates) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = np.flatnonzero(values >= kth)  # every word tied with the k-th best: the id decides below
        candidates, values = candidates[keep], values[keep]
    return candidates[np.lexsort((candidates, -values))[:k]]


def keystrokes_with_suggestions(probs: np.ndarray, word: str, target: int, vocab: Vocabulary, k: int = 3) -> int:
    """Keys pressed to enter ``word`` + space when a correct suggestion is tapped.

    At every prefix (the empty one first) the user looks at the ``k`` best
    words that complete it; a tap costs one key and enters the space too.
    """
    if vocab.is_word_id(target):
        for typed in range(len(word)):
            if target in top_k(probs, vocab.prefix_ids(word[:typed]), k):
                return typed + 1
    return len(word) + 1


class Accumulator:
    """Running totals, so evaluation streams over any amount of text."""

    def __init__(self) -> None:
        self.targets = self.oov = self.hit1 = self.hit3 = 0
        self.nll = 0.0
        self.keys_without = self.keys_with = 0

    def add(self, probs: np.ndarray, window: Window, vocab: Vocabulary, mask: np.ndarray) -> None:
        self.targets += 1
        in_vocab = vocab.is_word_id(window.target)
        self.oov += not in_vocab
        p = float(probs[window.target])
        self.nll -= math.log(max(p, 1e-12))
        if in_vocab:
            # Ranked as suggest() ranks: ahead of the target are the words with a higher probability
            # and, on a tie, those with a lower id. An int8 model's logits take a few dozen values, so
            # counting a tie for the target credited the bare model with about a point of top-3 that
            # no keyboard ever shows (and any change to the head, which breaks the ties, lost it).
            t = window.target
            better = int(np.count_nonzero(probs[mask] > p)) + int(np.count_nonzero(probs[:t][mask[:t]] == p))
            self.hit1 += better < 1
            self.hit3 += better < 3
        self.keys_without += len(window.word) + 1
        self.keys_with += keystrokes_with_suggestions(probs, window.word, window.target, vocab)

    def result(self) -> Evaluation:
        n = max(self.targets, 1)
        return Evaluation(self.targets, self.hit1 / n, self.hit3 / n, math.exp(self.nll / n),
                          1 - self.keys_with / max(self.keys_without, 1), self.oov / n)


@dataclass(frozen=True)
class Evaluation:
    """Next-word quality on a text; ``to_dict()`` is the CLI's JSON."""

    targets: int  # words scored
    top1: float  # share of targets that were the first suggestion
    top3: float  # ... among the first three
    perplexity: float
    keystroke_savings: float  # share of keys saved by tapping a correct suggestion among three
    oov_rate: float  # share of targets outside the vocabulary (always a miss)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(scorer: Scorer, vocab: Vocabulary, token_lines: Iterable[list[str]], context_length: int,
             max_targets: int | None = None, batch_size: int = 256, progress: bool = False,
             label: str = "evaluating") -> Evaluation:
    """Score a model on text (a scorer maps context ids ``[N, T]`` to probabilities ``[N, V]``)."""
    acc = Accumulator()
    mask = vocab.suggestable_mask()
    windows = iter_windows(token_lines, vocab, context_length, max_targets)
    with progress_bar(max_targets, label, progress) as bar:
        for batch in _batches(windows, batch_size):
            probs = scorer(np.stack([w.context for w in batch]))
            for row, w in zip(probs, batch, strict=True):
                acc.add(row, w, vocab, mask)
            bar.update(len(batch))
    if acc.targets == 0:
        raise NotEnoughTextError("no words to score in the evaluation text (is it empty?)")
    return acc.result()
