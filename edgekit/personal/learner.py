"""One personalization: train a new head, try it against the current state, adopt it only if it helps.

Every ``holdout_every``-th line is held out. The options (the current state;
the current head, the new one or a point between them, each with the phrase
memory at several weights) are scored on those lines together with the held-out lines of
earlier personalizations (the latest ``HELDOUT_TOKENS`` tokens), so a
personalization never makes suggestions worse on the user's own held-out
text, old or new: a few lines about one topic cannot undo what a year of
messages taught. Held-out lines stay out of the phrase memory while they
judge: a memory that had seen them would look better on them than it is.

A user who repeats whole messages makes held-out lines as repetitive as the
training lines, and there the heaviest phrase weight wins while lines the
user has not written before get worse. So the held-out lines that do not
occur verbatim in the text learned with them ("new" lines) are scored on
their own too, and an option that loses top-3 on them is never chosen.
The head trains only the columns of the words in the user's text
(``rows.Rows``): a word the user never wrote keeps its logit everywhere.
And on text the model version writes itself (``anchor``), no option may
lose more than ``TrainConfig.other_text_slack`` of the version's expected top-3: learning
SMS must not spoil prose.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np

from ..errors import NotEnoughTextError
from ..head import Columns, Head, Weights
from ..tokenizer import SPECIAL_TOKENS, Tokenizer
from ..vocab import Vocabulary
from .anchor import ANCHOR_ROWS, ANCHOR_WEIGHT, anchor_rows
from .gate import DEFAULT_GATE, fit_gate, gate_inputs, share
from .phrases import PhraseMemory
from .result import Accuracy, PersonalizeResult, Score
from .rows import Rows, Scorer, Teacher, candidate_rows, narrowed
from .state import MAX_PERSONAL_WORD_CHARS, PersonalState
from .train import (
    Option,
    TrainConfig,
    anchor_scores,
    for_small_text,
    memory_best,
    mixture_data,
    score_options,
    train_head,
)

PHRASE_WEIGHTS = (0.0, 0.5, 0.75, 1.0, 1.25)  # scales of the fitted phrase gate (``gate``)
# How far toward the trained head an option moves (``option_set``). The whole step or
# none was too coarse: within the bound on other text the best option was often the phrase
# memory alone. Half a step keeps most of the gain for a fraction of the change elsewhere
# (SMS, half a step and the phrase memory at 1.0: top-3 +8.2 points on its test part for
# -0.7 on *Persuasion*'s; the whole step at 0.5: +8.3 for -1.1).
HEAD_STEPS = (0.5, 1.0)
TOP3_SLACK = 0.003
COMMON_WORDS = 512  # the words with the highest bias, trained with the user's own
HELDOUT_TOKENS = 10_000  # earlier held-out text kept for the never-worse check


def read_lines(tokenizer: Tokenizer, texts: Iterable[str], cfg: TrainConfig) -> list[list[str]]:
    """The first lines of ``texts``, tokenized, up to ``cfg.max_lines`` lines and ``cfg.max_tokens``
    tokens (bounded memory); empty text is an error, not a no-op."""
    lines: list[list[str]] = []
    tokens = 0
    for line in tokenizer.iter_lines(texts):
        if len(lines) >= cfg.max_lines or tokens + len(line) > cfg.max_tokens:
            break
        lines.append(line)
        tokens += len(line)
    if not lines:
        raise NotEnoughTextError("no text to personalize on (the text is empty)")
    return lines


Score2 = tuple[Score, Score]  # on every held-out row, and on the rows of new lines


class Learner:
    """The parts of a model one personalization reads and changes: vocabulary, head, state.

    ``score(ids)`` runs the interpreter on a chunk of contexts and returns
    ``(features, logits of the current head, logits of the version's head)``;
    ``head`` gives the current and the version's weights of the columns it
    trains (a whole float head is 2.6 MB for 10,000 words);
    ``release()`` frees what ``score`` holds (the batch interpreter), called
    once every row is read: training and scoring the options need no
    interpreter, and the process peaks there.
    """

    def __init__(self, vocab: Vocabulary, context_length: int, score: Scorer, head: Head, state: PersonalState,
                 release: Callable[[], None] = lambda: None):
        self.vocab, self.context_length, self.score, self.release = vocab, context_length, score, release
        self.head, self.state = head, state

    def learn(self, lines: list[list[str]], cfg: TrainConfig, progress: bool = False) -> PersonalizeResult:
        """Learn from tokenized lines; changes ``state`` (and the vocabulary's personal words) in place."""
        t0 = time.perf_counter()
        new_words = self._assign_personal_words(lines, cfg.min_word_count)
        try:  # any failure, Ctrl-C included, leaves the vocabulary and the state as they were
            trial = self._trial(lines, cfg, progress)
        except BaseException:
            self._drop_words(new_words)
            raise
        self._add_contribution(trial.columns, trial.learned, trial.train_examples)
        retired = self._keep_heldout(trial.held, trial.held_new)
        if trial.adopted:
            self._adopt(trial.columns, trial.head, trial.memory, trial.weight, trial.gate, retired)
        else:
            self._drop_words(new_words)
        (before, before_new), (after, after_new) = trial.before, trial.best
        has_new = trial.new_examples > 0
        result = PersonalizeResult(
            trial.adopted, trial.train_examples, trial.heldout_examples, Accuracy(*before[:2]),
            Accuracy(*after[:2]), sorted(new_words) if trial.adopted else [], self.state.phrase_weight,
            round(time.perf_counter() - t0, 2), Accuracy(*before_new[:2]) if has_new else None,
            Accuracy(*after_new[:2]) if has_new else None, trial.phases)
        self.state.history.append({k: v for k, v in result.to_dict().items()
                                   if k in ("adopted", "train_examples", "before", "after")})
        return result

    def _trial(self, lines: list[list[str]], cfg: TrainConfig, progress: bool) -> _Trial:
        """Train a new head on most of ``lines``; score every option on the held-out rest and earlier held-out text."""
        every = cfg.holdout_every
        train = [ln for i, ln in enumerate(lines) if i % every != every - 1]
        held = [ln for i, ln in enumerate(lines) if i % every == every - 1]
        seen = {tuple(ln) for ln in train}
        held_new = [tuple(ln) not in seen for ln in held]
        lap = _Laps()
        x_tr, y_tr, _ = self._examples(train)
        x_ho, y_ho, line_of = self._examples(self.state.heldout + held)
        if not len(y_tr) or not len(y_ho):
            raise NotEnoughTextError("not enough text to personalize: need several lines with known or "
                                     "repeated words")
        memory = self._memory_with(train)
        mask = self.vocab.suggestable_mask()
        support = np.fromiter(set(memory.unigram) | set(self.state.phrases.unigram), np.int64)
        # The words the head favours everywhere compete with the user's: training may lower them too.
        common = np.argsort(self.head.bias())[-COMMON_WORDS:]
        columns = np.unique(np.concatenate([y_tr, y_ho, support, common]))
        columns = columns[mask[columns]]
        tr = candidate_rows(self.score, x_tr, y_tr, columns, mask, progress, top=False)
        ho = candidate_rows(self.score, x_ho, y_ho, columns, mask, progress)
        lap("features")
        # A few new lines: a quick check (the kept held-out text, old news, does not count toward it).
        new_text = len(y_tr) + int((line_of >= len(self.state.heldout)).sum())
        n_anchor = int(np.clip(new_text, ANCHOR_ROWS // 4, ANCHOR_ROWS))
        an, teacher = anchor_rows(self.score, self.vocab, self.context_length, columns, n_anchor)
        self.release()
        lap("anchor")
        current = self.head.columns(columns)
        trained = self._train(tr, ho, an, teacher, current, columns, np.concatenate([y_tr, y_ho, common]), cfg,
                              progress)
        lap("train")
        best_ho, p_ho, m_ho = mixture_data(ho, trained, memory, columns)
        best_an, p_an, m_an, t_an = mixture_data(an, trained, memory, columns, teacher)
        g_ho, g_an = gate_inputs(memory, ho.contexts, best_ho), gate_inputs(memory, an.contexts, best_an)
        gate = fit_gate((g_ho, p_ho, m_ho), (g_an, p_an, m_an, t_an), start=self.state.phrase_gate)
        lap("gate")
        choices = option_set(current, trained)
        new_rows = np.array(self.state.heldout_new + held_new, bool)[line_of]
        scores = score_options(ho, [self._current_option(current, ho, columns)] + [
            Option(h, memory, share(gate, g_ho, w)) for h, w in choices],
            np.stack([np.ones(len(ho), bool), new_rows]), columns)
        scored = [(Score(*s[0]), Score(*s[1])) for s in scores]

        on_anchor: dict[int, float] = {}
        heads = [current] + [h for h, _ in choices]

        def anchored(i: int) -> float:
            # Asked for at all, it is asked for two or three options: the preferred one, then the current
            # state, then the next preferred. After a few lines they are most often the current head's:
            # those are scored in one pass over the anchor rows (each memory's probabilities made once),
            # and the other heads' options only when one of them is asked for, all in one more pass.
            if i not in on_anchor:
                other = i != 0 and heads[i] is not current  # an option with another head is asked for
                group = [j for j, h in enumerate(heads) if j not in on_anchor and (other or h is current)]
                options = [self._current_option(current, an, columns) if j == 0 else
                           Option(heads[j], memory, share(gate, g_an, choices[j - 1][1])) for j in group]
                on_anchor.update(zip(group, anchor_scores(an, teacher, options, columns)[:, 1].tolist(), strict=True))
            return on_anchor[i]

        pick = choose(scored, anchored, float(teacher.top[:, 1].mean()), cfg.other_text_slack)
        head, weight = choices[pick - 1] if pick else (current, self.state.phrase_weight)
        lap("choice")
        learned = (trained[0] - current[0], trained[1] - current[1])
        return _Trial(held, held_new, columns, learned, scored[0], scored[pick], pick > 0, weight, gate,
                      head, memory, len(y_tr), len(y_ho), int(new_rows.sum()), lap.seconds)

    def _train(self, tr: Rows, held: Rows, an: Rows, teacher: Teacher, current: Weights, columns: np.ndarray,
               words: np.ndarray, cfg: TrainConfig, progress: bool) -> Weights:
        """The candidate ``columns`` (weights ``current``) trained on ``tr``, early stopping on ``held``:
        only those of ``words`` (the text's, the held-out text's and the common ones). The other
        candidates, words only earlier texts trained (there for the phrase memory's sake), keep their
        weights: this text says nothing new about them, and after 1,000 SMS lines they were half the
        columns each step of learning fifty more paid for (a first learning has none)."""
        keep = np.flatnonzero(np.isin(columns, words))
        narrow = len(keep) < len(columns)
        if narrow:
            tr, an = narrowed(tr, current, keep), narrowed(an, current, keep)
            teacher = teacher.narrowed(keep)
        w, b = train_head(tr.features, tr.targets, current[0][:, keep], current[1][keep],
                          for_small_text(cfg, len(tr)), progress, tr.rest_lse,
                          lambda: narrowed(held, current, keep) if narrow else held, (an, teacher), ANCHOR_WEIGHT)
        out = (current[0].copy(), current[1].copy())
        out[0][:, keep], out[1][keep] = w, b
        return out

    def _current_option(self, head: Weights, rows: Rows, columns: np.ndarray) -> Option:
        """The state as it is: the bar every other option must clear."""
        st = self.state
        if st.phrase_weight <= 0 or not len(st.phrases):
            return Option(head, None, None)
        best = memory_best(rows, st.phrases, columns)
        gate = DEFAULT_GATE if st.phrase_gate is None else st.phrase_gate
        return Option(head, st.phrases, share(gate, gate_inputs(st.phrases, rows.contexts, best), st.phrase_weight))

    def _assign_personal_words(self, lines: list[list[str]], min_count: int) -> set[str]:
        counts = Counter(t for ln in lines for t in ln if self.vocab.id_of(t) == self.vocab.unk
                         and t not in SPECIAL_TOKENS and not t.isdigit() and len(t) <= MAX_PERSONAL_WORD_CHARS)
        frequent = [w for w, c in counts.most_common() if c >= min_count]
        before = set(self.vocab.personal_words)
        return set(self.vocab.assign_personal(frequent)) - before

    def _drop_words(self, words: set[str]) -> None:
        self.vocab.set_personal({w: s for w, s in self.vocab.personal_words.items() if w not in words})

    def _examples(self, lines: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Contexts ``[N, T]``, targets ``[N]`` and the line each row comes from ``[N]``: the windows
        ``metrics.iter_windows`` reads (each word after a line's first token, the ``T`` ids before it,
        padded), those whose target is a word, for all lines at once (one window at a time was a
        tenth of learning a few lines)."""
        t, pad = self.context_length, self.vocab.pad
        ids = [np.asarray(self.vocab.encode(ln), np.int64) for ln in lines]
        if not ids:
            return np.zeros((0, t), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        lengths = np.array([len(x) for x in ids])
        flat = np.concatenate([part for x in ids for part in (np.full(t, pad, np.int64), x)])
        first = np.cumsum(lengths + t) - lengths  # where each line's ids start in ``flat``
        counts = np.maximum(lengths - 1, 0)
        line_of = np.repeat(np.arange(len(ids)), counts)
        at = np.repeat(first - np.cumsum(counts) + counts + 1, counts) + np.arange(counts.sum())
        words = self.vocab.suggestable_mask()[flat[at]]
        at, line_of = at[words], line_of[words]
        contexts = np.lib.stride_tricks.sliding_window_view(flat, t)[at - t].astype(np.int32)
        return contexts, flat[at], line_of

    def _memory_with(self, lines: list[list[str]]) -> PhraseMemory:
        memory = self.state.phrases.copy()
        memory.add_lines(self.vocab.encode(ln) for ln in lines)
        return memory

    def _add_contribution(self, columns: np.ndarray, learned: Weights, examples: int) -> None:
        st = self.state
        if st.contrib_w is None or st.contrib_b is None:
            st.contrib_w, st.contrib_b = Columns.zeros(*st.delta_w.shape), np.zeros_like(st.delta_b)
        st.contrib_w.put(columns, learned[0], add=True)
        st.contrib_b[columns] += learned[1]
        st.n_examples += examples

    def _keep_heldout(self, held: list[list[str]], new: list[bool]) -> list[list[str]]:
        """Add ``held`` to the kept held-out lines; returns the oldest ones that no longer fit."""
        kept, flags, retired = self.state.heldout + held, self.state.heldout_new + new, []
        total = sum(map(len, kept))
        while kept and total > HELDOUT_TOKENS:
            retired.append(kept.pop(0))
            flags.pop(0)
            total -= len(retired[-1])
        self.state.heldout, self.state.heldout_new = kept, flags
        return retired

    def _adopt(self, columns: np.ndarray, head: Weights, memory: PhraseMemory, weight: float, gate: np.ndarray,
               retired: list[list[str]]) -> None:
        memory.add_lines(self.vocab.encode(ln) for ln in retired)  # held-out text that no longer judges: learned
        # Only the trained columns change: the delta is written there in place (a whole new head and a
        # difference of two were 5 MB more at the peak).
        w0, b0 = self.head.columns(columns, personal=False)
        self.state.delta_w.put(columns, head[0] - w0)
        self.state.delta_b[columns] = head[1] - b0
        self.state.phrases, self.state.phrase_weight, self.state.phrase_gate = memory, weight, gate
        self.state.personal_words = self.vocab.personal_words


class _Trial(NamedTuple):
    """What one personalization tried, and the option that scored best on held-out text."""

    held: list[list[str]]  # this text's held-out lines
    held_new: list[bool]  # ... which of them the training part does not hold verbatim
    columns: np.ndarray  # the candidate words (ids) the head trained
    learned: Weights  # what training on the rest changed in the candidate columns (the contribution)
    before: Score2  # the current state's
    best: Score2  # the chosen option's
    adopted: bool
    weight: float  # the chosen phrase weight
    gate: np.ndarray  # the phrase gate fitted with the new memory
    head: Weights  # the chosen candidate columns
    memory: PhraseMemory  # the phrase memory with the new text
    train_examples: int
    heldout_examples: int
    new_examples: int  # held-out rows from new lines
    phases: dict[str, float]


class _Laps:
    """Seconds per phase: ``lap(name)`` ends the phase that started at the previous lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 3)
        self._t = now


def option_set(current: Weights, trained: Weights) -> list[tuple[Weights, float]]:
    """The (candidate columns, phrase weight) pairs a personalization tries: the current head and
    ``current + a * (trained - current)`` for each ``a`` in ``HEAD_STEPS``, each with every phrase weight."""
    heads = [current] + [trained if a == 1.0 else (current[0] + a * (trained[0] - current[0]),
                                                   current[1] + a * (trained[1] - current[1])) for a in HEAD_STEPS]
    return [(h, w) for h in heads for w in PHRASE_WEIGHTS]


def choose(scored: list[Score2], anchored: Callable[[int], float], version: float, slack: float | None) -> int:
    """The option to adopt (0: keep the current state, ``scored[0]``).

    Candidates lose no top-3 on the new lines. The preferred candidate has
    the best held-out top-3 or, among those within ``TOP3_SLACK`` of it, the
    lowest loss (heavy phrase weights win top-3 by a hair while wrecking
    perplexity for every word the user has not typed yet). It is adopted if
    it beats the current state on all held-out rows and, on anchor text,
    keeps an expected top-3 (``anchored(i)``, computed only for the options
    that get this far) within ``slack`` of the version's own (``version``)
    or no lower than the current state's; failing that, the next preferred
    candidate is tried (``slack=None``: no bound on anchor text).
    """
    (before, before_new) = scored[0]
    pool = [i for i, (_, new) in enumerate(scored) if i and new.top3 >= before_new.top3]
    current: float | None = None
    while pool:
        best_top3 = max(scored[i][0].top3 for i in pool)
        close = [i for i in pool if scored[i][0].top3 >= best_top3 - TOP3_SLACK]
        pick = min(close, key=lambda i: (scored[i][0].loss, -scored[i][0].top3))
        if not scored[pick][0].beats(before):
            return 0
        if slack is None:
            return pick
        on_anchor = anchored(pick)
        if on_anchor >= version - slack:
            return pick
        current = anchored(0) if current is None else current
        if on_anchor >= current:
            return pick
        pool.remove(pick)
    return 0
