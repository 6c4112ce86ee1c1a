"""``EdgeModel``: next-word suggestions that learn from their user, on the device.

    m = EdgeModel.load()                 # bundled model, default state dir
    m.suggest("see you tomo")            # [Suggestion("tomorrow", 0.61), ...]
    m.personalize(["text the user typed", ...])

No TensorFlow here: the body runs in LiteRT (or tflite-runtime), the head's
personal change and the phrase memory live in numpy.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from . import personalize as pz
from .blas import blas_threads
from .metrics import evaluate as evaluate_scorer
from .metrics import iter_windows, top_k
from .modelfile import ModelFile, read_model_file
from .phrases import PhraseMemory, mix
from .progress import progress_bar
from .runtime import load_interpreter
from .state import PersonalState, default_state_dir, load_state, save_state, state_path
from .tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerConfig, read_text_lines
from .vocab import Vocabulary

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "edgekit-en-int8.tflite"
BATCH = 256
PHRASE_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)
TOP3_SLACK = 0.003
SCORES_CACHE = 8  # contexts whose scores are kept (typing a word reuses one)
HELDOUT_TOKENS = 10_000  # earlier held-out text kept for the never-worse check
MAX_SUGGEST_CHARS = 4096  # only the end of a long text can matter to a 16-word context


class Suggestion(NamedTuple):
    word: str
    probability: float


class _Scores(NamedTuple):
    """One context's log-scale scores over the vocabulary; the interpreter's word ranking when known."""

    values: np.ndarray
    top_ids: np.ndarray | None = None  # the best words, best first (no specials, no personal slots)
    top_values: np.ndarray | None = None  # their logits
    sum_exp: float = math.nan  # sum(exp(logits)) over the words


class _Tensors(NamedTuple):
    """Where the runtime reads and writes in the interpreter (tensor indices)."""

    tokens: int
    features: int
    logits: int
    top_values: int | None  # the word-ranking outputs; None (rank on the host) in files made before them
    top_ids: int | None
    sum_exp: int | None


class _Trial(NamedTuple):
    """What one personalization tried, and the option that scored best on held-out text."""

    held: list[list[str]]  # this text's held-out lines
    trained: tuple[np.ndarray, np.ndarray]  # the head trained on the rest
    before: tuple  # (top1, top3, loss) of the current state
    best: tuple  # ... of the best option
    weight: float  # the best option's phrase weight
    head: tuple[np.ndarray, np.ndarray] | None  # its head; None keeps the current one
    memory: PhraseMemory  # the phrase memory with the new text
    train_examples: int
    heldout_examples: int


def default_model_path() -> Path:
    return ASSETS / DEFAULT_MODEL


class EdgeModel:
    """A loaded ``.tflite`` with its vocabulary, tokenizer and personal state."""

    def __init__(self, model_file: ModelFile, path: Path, state_dir: Path | None,
                 runtime: str | None = None, num_threads: int | None = None):
        self.path = path
        self.file = model_file
        self.metadata = model_file.metadata
        self.tokenizer = Tokenizer(TokenizerConfig.from_dict(self.metadata["tokenizer"]))
        self.vocab = Vocabulary(model_file.vocab, self.metadata.get("personal_slots", 0))
        self._num_threads = num_threads
        self._blas = num_threads or 1  # host matrix products: see edgekit/blas.py
        self._interp, self.runtime = load_interpreter(model_file.flatbuffer, self._suggest_threads, runtime)
        self._io = self._tensor_indices(self._interp)
        self._batch_interp = None
        self._base_head: tuple[np.ndarray, np.ndarray] | None = None
        self._head: tuple[np.ndarray, np.ndarray] | None = None  # base + personal delta, cached
        self._change: tuple[np.ndarray, np.ndarray] | None = None  # head - flatbuffer head, cached
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._set_state(self._empty_state())
        if self.state_file is not None and self.state_file.exists():
            self._set_state(load_state(self.state_file, self.fingerprint, self.feature_dim, len(self.vocab),
                                       self._skip_ids()))

    @classmethod
    def load(cls, path: str | Path | None = None, *, state_dir: str | Path | None = None,
             stateless: bool = False, runtime: str | None = None, num_threads: int | None = None) -> "EdgeModel":
        """Load a model file (default: the bundled English model) and the user's state.

        ``state_dir`` defaults to ``$EDGEKIT_STATE_DIR`` or the per-user data
        folder; ``stateless=True`` neither reads nor writes personal state.
        """
        path = Path(path) if path is not None else default_model_path()
        directory = None if stateless else Path(state_dir) if state_dir is not None else default_state_dir()
        return cls(read_model_file(path), path, directory, runtime, num_threads)

    @property
    def _suggest_threads(self) -> int:
        """Threads of the interpreter that scores one context per call: one unless told otherwise.

        One context is too little work to share; the runtime's idle threads
        spin after each invoke and take the core the app needs next (measured
        on 2 cores: invoke 166 us with one thread, 198 us with two).
        Batches (personalization) use ``num_threads`` as given.
        """
        return self._num_threads or 1

    # -- facts ------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]

    @property
    def context_length(self) -> int:
        return int(self.metadata["context_length"])

    @property
    def feature_dim(self) -> int:
        return int(self.metadata["feature_dim"])

    @property
    def quantization(self) -> str:
        return self.metadata["quantization"]

    @property
    def n_examples(self) -> int:
        return self.state.n_examples

    @property
    def state_file(self) -> Path | None:
        return None if self.state_dir is None else state_path(self.state_dir, self.metadata["name"])

    def info(self) -> dict:
        return {"path": str(self.path), "name": self.metadata["name"], "fingerprint": self.fingerprint,
                "quantization": self.quantization, "compat": self.metadata.get("compat", "litert"),
                "runtime": self.runtime, "vocab_size": len(self.vocab), "context_length": self.context_length,
                "feature_dim": self.feature_dim, "personal_slots": self.vocab.personal_slots,
                "personal_words": len(self.state.personal_words), "personal_examples": self.state.n_examples,
                "state_file": str(self.state_file) if self.state_file else None,
                "file_bytes": self.path.stat().st_size if self.path.exists() else None}

    # -- inference ----------------------------------------------------------
    def features_logits(self, ids: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the body on context ids ``[N, T]``: ``(features [N, F], logits [N, V])``.

        Personal-slot ids are fed to the body as ``<unk>``: the body was never
        trained on them; only the head knows personal words.
        """
        ids = self._body_ids(ids)
        if len(ids) == 1:
            return self._invoke(self._interp, ids)
        parts = list(self._batches(ids, progress))
        return np.concatenate([f for f, _ in parts]), np.concatenate([lg for _, lg in parts])

    def features(self, ids: np.ndarray, progress: bool = False) -> np.ndarray:
        """Features only, ``[N, F]``: what head training needs, without ``N x V`` logits in memory."""
        ids = self._body_ids(ids)
        return np.concatenate([f for f, _ in self._batches(ids, progress, keep_logits=False)])

    def _body_ids(self, ids: np.ndarray) -> np.ndarray:
        """Personal-slot ids become ``<unk>``: the body was never trained on them."""
        return np.where(np.asarray(ids) >= self.vocab.first_slot, self.vocab.unk, ids).astype(np.int32)

    def _batches(self, ids: np.ndarray, progress: bool, keep_logits: bool = True):
        interp = self._batch_interpreter()
        with progress_bar(len(ids), "running model", progress) as bar:
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), ids.shape[1]), np.int32)])
                f, lg = self._invoke(interp, padded)
                bar.update(len(chunk))
                yield f[: len(chunk)], (lg[: len(chunk)] if keep_logits else None)

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Next-word probabilities ``[N, V]`` for context ids ``[N, T]``, personal state included."""
        feats, logits = self.features_logits(ids)
        with blas_threads(self._blas):
            if self._host_head:
                dw, db = self._head_change()
                logits = logits + feats @ dw + db
            return mix(pz.softmax(logits.astype(np.float32)), self.state.phrases, ids, self.state.phrase_weight)

    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """The ``k`` likeliest next words, or completions of a partly typed word.

        Probabilities are conditional on the typed prefix (they sum to 1 over
        all completions). Case follows the user: "Tomo" -> "Tomorrow".
        """
        if not isinstance(text, str):
            raise TypeError(f"suggest() needs text (str), got {type(text).__name__}")
        context, prefix = self.tokenizer.split_partial(text[-MAX_SUGGEST_CHARS:], keep=self.context_length)
        if k <= 0:
            return []
        scores = self._ranking_scores(self.vocab.context_ids(context, self.context_length))
        if not prefix:
            ids, probs = self._rank_next(scores, k)
            return list(map(Suggestion, map(self.vocab.word, ids), probs))
        ids, probs = self._rank_completions(scores.values, prefix, k)
        typed = text.rstrip()[-len(prefix):]
        return [Suggestion(_match_case(self.vocab.word(i), typed), p) for i, p in zip(ids, probs)]

    def _rank_next(self, scores: _Scores, k: int) -> tuple[list[int], list[float]]:
        """Top ``k`` words over the whole vocabulary, skipping specials and free slots.

        The interpreter ranks the words itself when the file can (the hot path
        of a keyboard: a new context after every space); here they are read
        off, in plain Python: a few numbers do not pay for numpy's calls.
        Otherwise (older files, a personal state, ``k`` above its width, an
        overflowed sum) the scores are partitioned here. Probabilities are a
        softmax over the words only.
        """
        total = scores.sum_exp
        if scores.top_ids is not None and k <= len(scores.top_ids) and 0.0 < total < math.inf:
            return scores.top_ids[:k].tolist(), [math.exp(v) / total for v in scores.top_values[:k].tolist()]
        values, banned = scores.values, self.vocab.unsuggestable_ids()
        pool = np.argpartition(values, len(values) - (k + len(banned)))[-(k + len(banned)):]
        pool = pool[np.lexsort((pool, -values[pool]))]  # ties: the lower id first, as the interpreter's top-k does
        best = pool[self.vocab.suggestable_mask()[pool]][:k]
        if not len(best):
            return [], []
        weights = np.exp(values - values[best[0]])
        return best.tolist(), (weights[best] / (weights.sum() - weights[banned].sum())).tolist()

    def _rank_completions(self, scores: np.ndarray, prefix: str, k: int) -> tuple[list[int], list[float]]:
        """Top ``k`` words starting with ``prefix``; probabilities sum to 1 over all completions."""
        candidates = self.vocab.prefix_ids(prefix)
        if not len(candidates):
            return [], []
        sub = scores[candidates]
        order = top_k(sub, np.arange(len(sub)), k)
        weights = np.exp(sub - sub[order[0]])
        return candidates[order].tolist(), (weights[order] / weights.sum()).tolist()

    def _ranking_scores(self, ids: np.ndarray) -> _Scores:
        """Log-scale next-word scores for one context, cached per context.

        While a word is being typed its context does not change, so each
        keystroke after the first reuses the scores. With nothing personal in
        play they are the interpreter's logits and top-k as they come (no
        softmax over the vocabulary: the hot path of a keyboard).
        """
        key = ids.tobytes()
        scores = self._scores_cache.get(key)
        if scores is None:
            if self._plain:
                scores = self._invoke_ranked(ids[None])
            else:
                scores = _Scores(np.log(np.maximum(self.probabilities(ids[None])[0], 1e-30)))
            if len(self._scores_cache) >= SCORES_CACHE:
                self._scores_cache.pop(next(iter(self._scores_cache)))
            self._scores_cache[key] = scores
        return scores

    def evaluate(self, text: str | Path | Iterable[str], max_targets: int | None = None,
                 progress: bool = False) -> dict:
        """top1, top3, perplexity and keystroke savings on text (a file path or lines)."""
        return evaluate_scorer(self.probabilities, self.vocab, self.tokenizer.iter_lines(_lines(text)),
                               self.context_length, max_targets=max_targets, progress=progress)

    # -- the head -----------------------------------------------------------
    @property
    def base_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The model version's float head ``(W [F, V], b [V])``, read out of the file."""
        if self._base_head is None:
            self._base_head = self.file.head if self.file.head is not None else self._read_head()
        return self._base_head

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """Base head plus the personal delta."""
        if self._head is None:
            w, b = self.base_head
            self._head = (w + self.state.delta_w, b + self.state.delta_b)
        return self._head

    def _head_change(self) -> tuple[np.ndarray, np.ndarray]:
        """``head`` minus the head inside the flatbuffer (cached).

        Logits are the interpreter's plus ``features @ change``: the int8
        interpreter's own head scored 0.8 points of top-3 better than the
        same weights dequantized on the host, so only the change is added.
        """
        if self._change is None:
            (w, b), (w0, b0) = self.head, self._flat_head()
            self._change = (w - w0, b - b0)
        return self._change

    def _flat_head(self) -> tuple[np.ndarray, np.ndarray]:
        return self._read_head() if self.file.head is not None else self.base_head

    def head_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """This device's contribution to the *shared* head since its previous export or model install.

        It is what head training learned from the user's text, whether or not
        the device adopted it for its own suggestions (a small held-out check
        on one device is noisy; averaged over many devices the signal is not).
        Personal-word slots are excluded: they are personal data and stay here.
        """
        s, st = self.vocab.first_slot, self.state
        if st.contrib_w is None:
            return np.zeros((self.feature_dim, s), np.float32), np.zeros(s, np.float32)
        return st.contrib_w[:, :s].copy(), st.contrib_b[:s].copy()

    # -- federated ----------------------------------------------------------
    def export_update(self, server_public_key, path: str | Path | None = None, **options) -> bytes:
        """Seal :meth:`head_delta` for the server (clipped, optionally noised, encrypted), and consume it.

        An update carries what was learned since the previous export (or the
        model install), never again: once the bytes exist (and ``path`` is
        written, if given) the contribution is reset and the state saved, so
        two exports in one round cannot count the same text twice. An update
        that is never delivered is lost to the federation, not to the device:
        its personalization stays. With nothing new learned it raises
        ``ValueError`` ("nothing to export").

        ``options``: ``clip_norm``, ``noise_multiplier``, ``encoding`` (see
        ``edgekit.federated.make_update``). Returns the bytes.
        """
        from .federated.update import export_update

        return export_update(self, server_public_key, path, **options)

    def consume_contribution(self) -> None:
        """Reset the contribution once an update carries it; saved atomically (stateless: nothing to save).

        Called by ``export_update``: the next update then holds only what is
        learned from now on. The personalization the user sees is kept.
        """
        self.state.clear_contribution()
        self.save()

    def install_global(self, path: str | Path) -> None:
        """Switch to a new global version of this model (made by ``edgekit aggregate``).

        The user keeps their personalization on top of the new global head;
        the next export carries only what is learned from now on.
        """
        new = read_model_file(path)
        if new.metadata.get("body_sha256") != self.metadata.get("body_sha256") or new.vocab != self.file.vocab:
            raise ValueError(f"{path}: not a version of this model (its body or vocabulary differs); "
                             "load it as a new model instead")
        if new.flatbuffer != self.file.flatbuffer:  # first: a file the runtime refuses changes nothing
            self._interp, self.runtime = load_interpreter(new.flatbuffer, self._suggest_threads, self.runtime)
            self._batch_interp = None
        self.file, self.metadata, self.path = new, new.metadata, Path(path)
        self._io = self._tensor_indices(self._interp)  # from the new metadata: its outputs may differ
        self._base_head = None
        state = self.state  # the server has folded contributions into the new head: start afresh
        state.fingerprint = new.fingerprint
        state.clear_contribution()
        self._set_state(state)
        self.save()

    # -- personalization ----------------------------------------------------
    def personalize(self, texts: str | Path | Iterable[str], config: pz.TrainConfig | None = None,
                    progress: bool = False, save: bool = True) -> dict:
        """Learn from the user's text; adopt the result only if it helps on held-out text.

        ``texts``: a file path, or an iterable of strings (messages/lines).
        Every ``holdout_every``-th line is held out; the new head and phrase
        weight are adopted only when top-3 beats the current state on those
        lines together with the held-out lines of earlier personalizations
        (the latest ``HELDOUT_TOKENS`` tokens), so a personalization never makes
        suggestions worse on the user's own held-out text, old or new: a few
        lines about one topic cannot undo what a year of messages taught.
        """
        cfg = config or pz.TrainConfig()
        with blas_threads(cfg.threads):
            return self._personalize(texts, cfg, progress, save)

    def _personalize(self, texts, cfg: pz.TrainConfig, progress: bool, save: bool) -> dict:
        t0 = time.perf_counter()
        lines = self._read_personal(texts, cfg)
        new_words = self._assign_personal_words(lines, cfg.min_word_count)
        try:  # any failure, Ctrl-C included, leaves the vocabulary and the state as they were
            trial = self._trial(lines, cfg, progress)
        except BaseException:
            self._drop_words(new_words)
            raise
        self._add_contribution(trial.trained, trial.train_examples)
        before, best = trial.before, trial.best
        adopted = bool(trial.head is not None and (best[1], best[0], -best[2]) > (before[1], before[0], -before[2]))
        retired = self._keep_heldout(trial.held)
        if adopted:
            self._adopt(trial.head, trial.memory, trial.weight, retired)
        else:
            self._drop_words(new_words)
        report = {"adopted": adopted, "train_examples": trial.train_examples,
                  "heldout_examples": trial.heldout_examples,
                  "before": {"top1": before[0], "top3": before[1]}, "after": {"top1": best[0], "top3": best[1]},
                  "new_personal_words": sorted(new_words) if adopted else [],
                  "phrase_weight": self.state.phrase_weight, "seconds": round(time.perf_counter() - t0, 2)}
        self.state.history.append({k: report[k] for k in ("adopted", "train_examples", "before", "after")})
        if save:
            self.save()
        return report

    def _trial(self, lines: list[list[str]], cfg: pz.TrainConfig, progress: bool) -> "_Trial":
        """Train a new head on most of ``lines``; score every option on the held-out rest and earlier held-out text."""
        train = [ln for i, ln in enumerate(lines) if i % cfg.holdout_every != cfg.holdout_every - 1]
        held = [ln for i, ln in enumerate(lines) if i % cfg.holdout_every == cfg.holdout_every - 1]
        x_tr, y_tr = self._examples(train)
        x_ho, y_ho = self._examples(self.state.heldout + held)
        if not len(y_tr) or not len(y_ho):
            raise ValueError("not enough text to personalize: need several lines with known or repeated words")
        f_tr = self.features(x_tr, progress)
        f_ho = self.features(x_ho, progress)
        new_head = pz.train_head(f_tr, y_tr, *self.head, cfg, progress)
        memory = self._memory_with(train)
        st = self.state
        options = [(self.head, st.phrases, st.phrase_weight, None)]  # the current state: the bar to beat
        options += [(h, memory, w, h) for h in (self.head, new_head) for w in PHRASE_WEIGHTS]
        scores = pz.score_options(f_ho, x_ho, y_ho, [o[:3] for o in options], self.vocab.suggestable_mask())
        best, (_, _, weight, head) = _choose(list(zip(scores, options)))
        return _Trial(held, new_head, scores[0], best, weight, head, memory, int(len(y_tr)), int(len(y_ho)))

    def save(self) -> None:
        """Write personal state atomically (no-op for a stateless model)."""
        if self.state_file is not None:
            save_state(self.state_file, self.state)

    def reset(self) -> None:
        """Forget everything personal: in memory and on disk."""
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        self._set_state(self._empty_state())

    # -- internals ----------------------------------------------------------
    def _invoke(self, interp, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        io = self._io
        interp.set_tensor(io.tokens, ids)
        interp.invoke()
        return interp.get_tensor(io.features), interp.get_tensor(io.logits)

    def _invoke_ranked(self, ids: np.ndarray) -> _Scores:
        """One context's logits, plus the interpreter's word ranking when the file has one."""
        io, interp = self._io, self._interp
        interp.set_tensor(io.tokens, ids)
        interp.invoke()
        logits = interp.get_tensor(io.logits)[0]
        if io.top_ids is None:
            return _Scores(logits)
        return _Scores(logits, interp.get_tensor(io.top_ids)[0], interp.get_tensor(io.top_values)[0],
                       float(interp.get_tensor(io.sum_exp)[0, 0]))

    def _tensor_indices(self, interp) -> _Tensors:
        """Interpreter tensor indices of the input and the outputs the runtime reads."""
        outs, o = interp.get_output_details(), self.metadata["outputs"]
        # Files converted before the word ranking lack it (or ranked every id).
        ranks = self.metadata.get("ranked_ids") == list(self.vocab.word_ids)

        def output(name: str, ranking: bool = False) -> int | None:
            return outs[o[name]]["index"] if ranks or not ranking else None

        return _Tensors(interp.get_input_details()[self.metadata["inputs"]["tokens"]]["index"],
                        output("features"), output("logits"),
                        output("top_values", True), output("top_ids", True), output("sum_exp", True))

    def _batch_interpreter(self):
        if self._batch_interp is None:
            interp, _ = load_interpreter(self.file.flatbuffer, self._num_threads, self.runtime)
            idx = interp.get_input_details()[self.metadata["inputs"]["tokens"]]["index"]
            interp.resize_tensor_input(idx, [BATCH, self.context_length])
            interp.allocate_tensors()
            self._batch_interp = interp
        return self._batch_interp

    def _read_head(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.metadata["head"]
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        w = _dequantize(self._interp.get_tensor(h["weight_tensor"]), details[h["weight_tensor"]]).T
        b = (np.zeros(w.shape[1], np.float32) if h.get("bias_tensor") is None
             else _dequantize(self._interp.get_tensor(h["bias_tensor"]), details[h["bias_tensor"]]))
        return np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32)

    def _skip_ids(self) -> list[int]:
        return [self.vocab.ids[t] for t in SPECIAL_TOKENS]

    def _empty_state(self) -> PersonalState:
        return PersonalState.empty(self.fingerprint, self.feature_dim, len(self.vocab), self._skip_ids())

    def _set_state(self, state: PersonalState) -> None:
        self.vocab.set_personal(state.personal_words)
        self.state = state
        self._head = self._change = None
        self._scores_cache: dict[bytes, _Scores] = {}
        # Logits come from numpy only when the head differs from the flatbuffer's.
        self._host_head = self.file.head is not None or bool(state.delta_w.any() or state.delta_b.any())
        # Nothing personal: suggestions are the interpreter's outputs as they come, its ranking included.
        self._plain = not (self._host_head or (state.phrase_weight and len(state.phrases)) or state.personal_words)

    def _read_personal(self, texts, cfg: pz.TrainConfig) -> list[list[str]]:
        lines = []
        for tokens in self.tokenizer.iter_lines(_lines(texts)):
            lines.append(tokens)
            if len(lines) >= cfg.max_lines:
                break
        if not lines:
            raise ValueError("no text to personalize on (the text is empty)")
        return lines

    def _assign_personal_words(self, lines: list[list[str]], min_count: int) -> set[str]:
        from collections import Counter

        counts = Counter(t for ln in lines for t in ln if self.vocab.id_of(t) == self.vocab.unk
                         and t not in SPECIAL_TOKENS and not t.isdigit())
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
        memory = PhraseMemory.from_arrays(len(self.vocab), self._skip_ids(), self.state.phrases.to_arrays())
        for ln in lines:
            memory.add(self.vocab.encode(ln))
        return memory

    def _add_contribution(self, new_head: tuple[np.ndarray, np.ndarray], examples: int) -> None:
        st, (w, b) = self.state, self.head
        if st.contrib_w is None:
            st.contrib_w, st.contrib_b = np.zeros_like(w), np.zeros_like(b)
        st.contrib_w += new_head[0] - w
        st.contrib_b += new_head[1] - b
        st.n_examples += examples

    def _keep_heldout(self, held: list[list[str]]) -> list[list[str]]:
        """Add ``held`` to the kept held-out lines; returns the oldest ones that no longer fit.

        Held-out lines stay out of the phrase memory while they judge: a memory
        that had seen them would look better on them than it is.
        """
        kept, retired = self.state.heldout + held, []
        total = sum(map(len, kept))
        while kept and total > HELDOUT_TOKENS:
            retired.append(kept.pop(0))
            total -= len(retired[-1])
        self.state.heldout = kept
        return retired

    def _adopt(self, head, memory: PhraseMemory, weight: float, retired: list[list[str]]) -> None:
        for ln in retired:  # held-out text that no longer judges: remember it too
            memory.add(self.vocab.encode(ln))
        w0, b0 = self.base_head
        self.state.delta_w, self.state.delta_b = head[0] - w0, head[1] - b0
        self.state.phrases, self.state.phrase_weight = memory, weight
        self.state.personal_words = self.vocab.personal_words
        self._set_state(self.state)


def _choose(options: list) -> tuple:
    """Best held-out top-3; among options within ``TOP3_SLACK`` of it, the lowest loss.

    Heavy phrase weights win top-3 by a hair while wrecking perplexity for
    every word the user has not typed yet; the slack prefers the safer mix.
    """
    best_top3 = max(o[0][1] for o in options)
    close = [o for o in options if o[0][1] >= best_top3 - TOP3_SLACK]
    return min(close, key=lambda o: (o[0][2], -o[0][1]))


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float32)
    if values.dtype in (np.float32, np.float16) or not len(scales):
        return values.astype(np.float32)
    zero = np.asarray(q.get("zero_points", np.zeros_like(scales)), np.float32)
    axis = int(q.get("quantized_dimension", 0))
    shape = [1] * values.ndim
    shape[axis] = -1
    return (values.astype(np.float32) - zero.reshape(shape)) * scales.reshape(shape)


def _match_case(word: str, typed: str) -> str:
    if typed[:1].isupper():
        return word.upper() if len(typed) > 1 and typed.isupper() else word[:1].upper() + word[1:]
    return word


def _lines(text: str | Path | Iterable[str]) -> Iterator[str]:
    """A path is read as a UTF-8 file (streamed); a str is one text; else an iterable of texts."""
    if isinstance(text, Path):
        return read_text_lines(text)
    if isinstance(text, str):
        return iter(text.splitlines() or [text])
    return iter(text)
