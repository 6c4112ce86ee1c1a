"""One personalization: train a new head, try it against the current state, adopt it only if it helps.

Every ``holdout_every``-th line is held out. The options (the current state;
the current or the new head, each with the phrase memory at several
weights) are scored on those lines together with the held-out lines of
earlier personalizations (the latest ``HELDOUT_TOKENS`` tokens), so a
personalization never makes suggestions worse on the user's own held-out
text, old or new: a few lines about one topic cannot undo what a year of
messages taught. Held-out lines stay out of the phrase memory while they
judge: a memory that had seen them would look better on them than it is.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, NamedTuple

import numpy as np

from ..errors import NotEnoughTextError
from ..metrics import iter_windows
from ..tokenizer import SPECIAL_TOKENS
from ..vocab import Vocabulary
from .phrases import PhraseMemory
from .state import MAX_PERSONAL_WORD_CHARS, PersonalState
from .train import TrainConfig, score_options, train_head

Weights = tuple[np.ndarray, np.ndarray]
PHRASE_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)
TOP3_SLACK = 0.003
HELDOUT_TOKENS = 10_000  # earlier held-out text kept for the never-worse check


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top3: float


@dataclass(frozen=True)
class PersonalizeResult:
    """What a personalization did; ``to_dict()`` is the CLI's JSON."""

    adopted: bool  # the new head and phrase weight are in use (they beat the current state on held-out text)
    train_examples: int
    heldout_examples: int
    before: Accuracy  # held-out accuracy of the state before
    after: Accuracy  # ... of the best option tried
    new_personal_words: list[str] = field(default_factory=list)
    phrase_weight: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def take_lines(lines: Iterable[list[str]], cfg: TrainConfig) -> list[list[str]]:
    """The first tokenized lines, up to ``cfg.max_lines`` lines and ``cfg.max_tokens`` tokens: bounded memory."""
    taken, tokens = [], 0
    for line in lines:
        if len(taken) >= cfg.max_lines or tokens + len(line) > cfg.max_tokens:
            break
        taken.append(line)
        tokens += len(line)
    return taken


class Score(NamedTuple):
    top1: float
    top3: float
    loss: float

    def beats(self, other: "Score") -> bool:
        return (self.top3, self.top1, -self.loss) > (other.top3, other.top1, -other.loss)


class Learner:
    """The parts of a model one personalization reads and changes: vocabulary, head, state."""

    def __init__(self, vocab: Vocabulary, context_length: int, features: Callable[..., np.ndarray],
                 head: Weights, base: Weights, state: PersonalState):
        self.vocab, self.context_length, self.features = vocab, context_length, features
        self.head, self.base, self.state = head, base, state

    def learn(self, lines: list[list[str]], cfg: TrainConfig, progress: bool = False) -> PersonalizeResult:
        """Learn from tokenized lines; changes ``state`` (and the vocabulary's personal words) in place."""
        t0 = time.perf_counter()
        new_words = self._assign_personal_words(lines, cfg.min_word_count)
        try:  # any failure, Ctrl-C included, leaves the vocabulary and the state as they were
            trial = self._trial(lines, cfg, progress)
        except BaseException:
            self._drop_words(new_words)
            raise
        self._add_contribution(trial.trained, trial.train_examples)
        adopted = trial.head is not None and trial.best.beats(trial.before)
        retired = self._keep_heldout(trial.held)
        if adopted:
            self._adopt(trial.head, trial.memory, trial.weight, retired)
        else:
            self._drop_words(new_words)
        result = PersonalizeResult(
            adopted, trial.train_examples, trial.heldout_examples, Accuracy(*trial.before[:2]),
            Accuracy(*trial.best[:2]), sorted(new_words) if adopted else [], self.state.phrase_weight,
            round(time.perf_counter() - t0, 2))
        self.state.history.append({k: v for k, v in result.to_dict().items()
                                   if k in ("adopted", "train_examples", "before", "after")})
        return result

    def _trial(self, lines: list[list[str]], cfg: TrainConfig, progress: bool) -> "_Trial":
        """Train a new head on most of ``lines``; score every option on the held-out rest and earlier held-out text."""
        train = [ln for i, ln in enumerate(lines) if i % cfg.holdout_every != cfg.holdout_every - 1]
        held = [ln for i, ln in enumerate(lines) if i % cfg.holdout_every == cfg.holdout_every - 1]
        x_tr, y_tr = self._examples(train)
        x_ho, y_ho = self._examples(self.state.heldout + held)
        if not len(y_tr) or not len(y_ho):
            raise NotEnoughTextError("not enough text to personalize: need several lines with known or "
                                     "repeated words")
        f_tr = self.features(x_tr, progress)
        f_ho = self.features(x_ho, progress)
        new_head = train_head(f_tr, y_tr, *self.head, cfg, progress)
        memory = self._memory_with(train)
        st = self.state
        options = [(self.head, st.phrases, st.phrase_weight, None)]  # the current state: the bar to beat
        options += [(h, memory, w, h) for h in (self.head, new_head) for w in PHRASE_WEIGHTS]
        scores = [Score(*s) for s in
                  score_options(f_ho, x_ho, y_ho, [o[:3] for o in options], self.vocab.suggestable_mask())]
        best, (_, _, weight, head) = choose(list(zip(scores, options)))
        return _Trial(held, new_head, scores[0], best, weight, head, memory, int(len(y_tr)), int(len(y_ho)))

    def _assign_personal_words(self, lines: list[list[str]], min_count: int) -> set[str]:
        counts = Counter(t for ln in lines for t in ln if self.vocab.id_of(t) == self.vocab.unk
                         and t not in SPECIAL_TOKENS and not t.isdigit() and len(t) <= MAX_PERSONAL_WORD_CHARS)
        frequent = [w for w, c in counts.most_common() if c >= min_count]
        before = set(self.vocab.personal_words)
        return set(self.vocab.assign_personal(frequent)) - before

    def _drop_words(self, words: set[str]) -> None:
        self.vocab.set_personal({w: s for w, s in self.vocab.personal_words.items() if w not in words})

    def _examples(self, lines: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        ctx, tgt = [], []
        for w in iter_windows(lines, self.vocab, self.context_length):
            if self.vocab.is_word_id(w.target):
                ctx.append(w.context)
                tgt.append(w.target)
        if not ctx:
            return np.zeros((0, self.context_length), np.int32), np.zeros(0, np.int64)
        return np.stack(ctx), np.array(tgt, np.int64)

    def _memory_with(self, lines: list[list[str]]) -> PhraseMemory:
        memory = PhraseMemory.from_arrays(len(self.vocab), self.vocab.special_ids, self.state.phrases.to_arrays())
        for ln in lines:
            memory.add(self.vocab.encode(ln))
        return memory

    def _add_contribution(self, new_head: Weights, examples: int) -> None:
        st, (w, b) = self.state, self.head
        if st.contrib_w is None or st.contrib_b is None:
            st.contrib_w, st.contrib_b = np.zeros_like(w), np.zeros_like(b)
        st.contrib_w += new_head[0] - w
        st.contrib_b += new_head[1] - b
        st.n_examples += examples

    def _keep_heldout(self, held: list[list[str]]) -> list[list[str]]:
        """Add ``held`` to the kept held-out lines; returns the oldest ones that no longer fit."""
        kept, retired = self.state.heldout + held, []
        total = sum(map(len, kept))
        while kept and total > HELDOUT_TOKENS:
            retired.append(kept.pop(0))
            total -= len(retired[-1])
        self.state.heldout = kept
        return retired

    def _adopt(self, head: Weights, memory: PhraseMemory, weight: float, retired: list[list[str]]) -> None:
        for ln in retired:  # held-out text that no longer judges: remember it too
            memory.add(self.vocab.encode(ln))
        w0, b0 = self.base
        self.state.delta_w, self.state.delta_b = head[0] - w0, head[1] - b0
        self.state.phrases, self.state.phrase_weight = memory, weight
        self.state.personal_words = self.vocab.personal_words


class _Trial(NamedTuple):
    """What one personalization tried, and the option that scored best on held-out text."""

    held: list[list[str]]  # this text's held-out lines
    trained: Weights  # the head trained on the rest
    before: Score  # the current state's
    best: Score  # the best option's
    weight: float  # the best option's phrase weight
    head: Weights | None  # its head; None keeps the current one
    memory: PhraseMemory  # the phrase memory with the new text
    train_examples: int
    heldout_examples: int


def choose(options: list) -> tuple:
    """Best held-out top-3; among options within ``TOP3_SLACK`` of it, the lowest loss.

    Heavy phrase weights win top-3 by a hair while wrecking perplexity for
    every word the user has not typed yet; the slack prefers the safer mix.
    """
    best_top3 = max(o[0].top3 for o in options)
    close = [o for o in options if o[0].top3 >= best_top3 - TOP3_SLACK]
    return min(close, key=lambda o: (o[0].loss, -o[0].top3))
