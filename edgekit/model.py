"""``EdgeModel``: next-word suggestions that learn from their user, on the device.

    m = EdgeModel.load()                 # bundled model, default state dir
    m.suggest("see you tomo")            # [Suggestion("tomorrow", 0.61), ...]
    m.personalize(["text the user typed", ...])

A facade over the parts, each in its own module: the interpreter
(``runtime``), the head (``head``), ranking (``suggest``), scoring with the
personal state (``personal.predict``), learning (``personal.learner``), the
state and what it holds (``personal.state``, ``personal.phrases``,
``personal.words``). No TensorFlow here.
"""
from __future__ import annotations

import errno
import os
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

from .blas import blas_threads
from .errors import StateError
from .head import Head
from .info import ModelInfo
from .installed import LOCAL, check_descends, check_trust, current_model, lineage, load_origin, record_install
from .metrics import Evaluation, evaluate
from .modelfile import ModelFile, read_model_file, require_runnable
from .paths import default_state_dir
from .personal.learner import Learner, read_lines
from .personal.predict import Predictor
from .personal.result import PersonalizeResult
from .personal.state import PersonalState, load_state, save_state, state_path
from .personal.train import TrainConfig
from .personal.words import LearnedWord, forget_phrases, forget_word, learned_words
from .runtime import Runtime
from .suggest import Suggester, Suggestion
from .tokenizer import Tokenizer, TokenizerConfig, text_lines
from .trust import ASSETS
from .vocab import Vocabulary

DEFAULT_MODEL = "edgekit-en-int8.tflite"
Text = str | Path | Iterable[str]


def default_model_path() -> Path:
    return ASSETS / DEFAULT_MODEL


def resolve_model_path(path: str | Path | None, state_dir: Path | None) -> Path:
    """``path``, else the version installed in ``state_dir`` (``install_global``), else the bundled model."""
    if path is not None:
        return Path(path)
    return (current_model(state_dir) if state_dir is not None else None) or default_model_path()


def read_trusted(path: str | Path | None, state_dir: Path | None, *, verify_key: str | Path | None = None,
                 unsigned_local: bool = False) -> ModelFile:
    """The model file a device may run, with its ``origin`` (``edgekit.installed.load_origin`` for the rules)
    and ``path`` (where ``resolve_model_path`` found it).

    No ``path``, or the installed copy's path: the version installed in
    ``state_dir`` (checked when it was installed: ``"installed"``), else the
    bundled model (pinned: ``"bundled"``). Another ``path``: bundled, signed
    by a key ``state_dir`` trusts or ``verify_key``, or refused unless
    ``unsigned_local`` (``"local"``).
    """
    resolved = resolve_model_path(path, state_dir)
    installed = current_model(state_dir) if state_dir is not None else None
    file = read_model_file(resolved)
    if file.origin != "bundled" and installed is not None and resolved.resolve() == installed.resolve():
        return replace(file, origin="installed")
    return replace(file, origin=load_origin(file, resolved, state_dir, verify_key, unsigned_local))


class EdgeModel:
    """A loaded ``.tflite`` with its vocabulary, tokenizer and personal state."""

    def __init__(self, file: ModelFile, path: Path, state_dir: Path | None,
                 runtime: str | None = None, num_threads: int | None = None):
        require_runnable(file)  # before any field is read or LiteRT sees the flatbuffer
        self.path, self.file, self.state_dir = path, file, state_dir
        self.tokenizer = Tokenizer(TokenizerConfig.from_dict(file.metadata["tokenizer"]))
        self.vocab = Vocabulary(file.vocab, file.metadata.get("personal_slots", 0))
        self._runtime = Runtime(file, self.vocab, runtime, num_threads)
        # Through a weak reference: a model its app drops is freed at once, interpreters and all, not at the
        # next cyclic garbage collection (the suggester calling back into the model would make a cycle).
        model = weakref.ref(self)
        self._suggester = Suggester(self.tokenizer, self.vocab, self.context_length,
                                    lambda ids, k: model()._p.scores(ids, k))  # type: ignore[union-attr]
        self._blas = num_threads or 1  # host matrix products: see edgekit/blas.py
        self._p = Predictor(self._runtime, Head(self._runtime), self._empty_state(), self.vocab, self._blas)
        if self.state_file is not None and self.state_file.exists():
            self._set_state(load_state(self.state_file, self.fingerprint, self.feature_dim, len(self.vocab),
                                       self.vocab.special_ids, self.vocab.first_slot))

    @classmethod
    def load(cls, path: str | Path | None = None, *, state_dir: str | Path | None = None,
             stateless: bool = False, runtime: str | None = None, num_threads: int | None = None,
             verify_key: str | Path | None = None, unsigned_local: bool = False) -> EdgeModel:
        """Load a model file (default: the version installed in the state folder, else the bundled
        English model) and the user's state (``state_dir``: default ``$EDGEKIT_STATE_DIR`` or the
        per-user data folder; ``stateless``: none). ``num_threads`` is for learning; suggestions use one.

        A ``path`` must be a bundled file or a version signed by a key the state folder trusts (or
        ``verify_key``); a file you converted yourself loads only with ``unsigned_local=True``
        (``info().origin == "local"``), never silently: nothing vouches for what it predicts."""
        folder = Path(state_dir) if state_dir is not None else default_state_dir()
        directory = None if stateless else folder
        # No path: the state folder's installed version (none for a stateless load). A path: checked against
        # the keys the device's state folder trusts, even for a stateless load.
        trust_dir = directory if path is None else folder
        file = read_trusted(path, trust_dir, verify_key=verify_key, unsigned_local=unsigned_local)
        assert file.path is not None  # read_model_file records where it read the file
        return cls(file, file.path, directory, runtime, num_threads)

    # -- facts ------------------------------------------------------------
    metadata = property(lambda self: self.file.metadata)
    fingerprint = property(lambda self: self.metadata["fingerprint"], doc="The model version.")
    context_length = property(lambda self: int(self.metadata["context_length"]))
    feature_dim = property(lambda self: int(self.metadata["feature_dim"]))
    quantization = property(lambda self: self.metadata["quantization"])
    origin = property(lambda self: self.file.origin,
                      doc='What vouches for the file: "bundled", "installed", "signed", or nothing ("local").')
    runtime = property(lambda self: self._runtime.name, doc="The interpreter package in use.")
    max_k = property(lambda self: self._runtime.max_k, doc="The most suggestions one call can rank.")
    n_examples = property(lambda self: self.state.n_examples, doc="Examples learned since the last export.")
    state = property(lambda self: self._p.state, doc="The personal state in use.")

    @property
    def base_head(self) -> tuple[np.ndarray, np.ndarray]:
        """The model version's float head ``(W [F, V], b [V])``."""
        return self._p.head.base

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """Base head plus the personal delta."""
        return self._p.head.weights

    @property
    def state_file(self) -> Path | None:
        return None if self.state_dir is None else state_path(self.state_dir, self.metadata["name"])

    def info(self) -> ModelInfo:
        from .signing import is_signed  # cryptography: only when asked

        return ModelInfo(str(self.path), self.metadata["name"], self.fingerprint, tuple(lineage(self.file)),
                         is_signed(self.file), self.origin, self.quantization,
                         self.metadata.get("compat", "litert"), self.runtime, len(self.vocab), self.context_length,
                         self.feature_dim, self.vocab.personal_slots, len(self.state.personal_words),
                         self.state.n_examples, str(self.state_file) if self.state_file else None,
                         self.path.stat().st_size if self.path.exists() else None)

    # -- inference ----------------------------------------------------------
    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """The ``k`` likeliest next words, or completions of the partly typed last word."""
        return self._suggester.suggest(text, k)

    @property
    def blocked_words(self) -> frozenset[str]:
        """Words never suggested: edgekit's profanity list by default; ``m.blocked_words = ()`` allows all."""
        return self._suggester.blocked_words

    @blocked_words.setter
    def blocked_words(self, words: Iterable[str]) -> None:
        self._suggester.blocked_words = words

    def features_logits(self, ids: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The body on context ids ``[N, T]``: ``(features [N, F], logits of the file's head [N, V])``."""
        return self._runtime.features_logits(ids, progress)

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Next-word probabilities ``[N, V]`` for context ids ``[N, T]``, personal state included."""
        return self._p.probabilities(ids)

    def evaluate(self, text: Text, max_targets: int | None = None, progress: bool = False) -> Evaluation:
        """top1, top3, perplexity and keystroke savings on text (a ``Path``, a str, or lines)."""
        return evaluate(self.probabilities, self.vocab, self.tokenizer.iter_lines(text_lines(text)),
                        self.context_length, max_targets=max_targets, progress=progress)

    # -- personalization ----------------------------------------------------
    def personalize(self, texts: Text, config: TrainConfig | None = None, *, progress: bool = False,
                    save: bool = True) -> PersonalizeResult:
        """Learn from the user's text (a ``Path``, a str, or messages); adopted only if it does not
        lose on held-out text (``edgekit.personal.learner`` says what that means)."""
        cfg = config or TrainConfig()
        lines = read_lines(self.tokenizer, text_lines(texts), cfg)
        if save:
            self._state_folder()  # before learning, not after: a folder that cannot be written loses the work
        self._p.release()
        self._suggester.clear()
        learner = Learner(self.vocab, self.context_length, self._p.features_scores, self._p.head, self.state,
                          self._runtime.release)
        try:
            with blas_threads(cfg.threads):
                result = learner.learn(lines, cfg, progress)
        finally:
            self._runtime.release()  # learning is occasional: its interpreter is not kept between times
        self._set_state(self.state)
        if save:
            self.save()
        return result

    def personalize_file(self, path: str | Path, config: TrainConfig | None = None, *,
                         progress: bool = False, save: bool = True) -> PersonalizeResult:
        """``personalize`` on a UTF-8 text file, one message per line."""
        return self.personalize(Path(path), config, progress=progress, save=save)

    def head_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """What head training learned since the last export or install, adopted here or not (one
        device's check is noisy, a fleet's average is not): the shared rows only, never personal slots."""
        return self.state.shared_contribution(self.vocab.first_slot)

    def consume_contribution(self) -> None:
        """Reset the contribution once an update carries it (saved); the personalization stays."""
        self.state.clear_contribution()
        self.save()

    def install_global(self, path: str | Path, *, verify_key: str | Path | None = None,
                       unsigned_local: bool = False) -> str:
        """Install a new global version (``edgekit aggregate``); returns how it is trusted. Checks
        (``edgekit.installed``): signed by a trusted key or ``verify_key`` (or ``unsigned_local`` for a
        file the user converted), same body and vocabulary, descends from the installed version. The
        personalization stays; the next export carries only what is learned from now on."""
        new = read_model_file(path)
        trust = check_trust(new, path, self.state_dir, verify_key, unsigned_local)
        check_descends(self.file, new, path)
        self._runtime = self._runtime.with_file(new)  # first: a file the runtime refuses changes nothing
        new.origin = "installed" if self.state_dir is not None else "local" if trust == LOCAL else "signed"
        self.file, self.path, state = new, Path(path), self.state
        state.fingerprint = new.fingerprint  # the server folded contributions into the new head
        state.clear_contribution()
        self._p = Predictor(self._runtime, Head(self._runtime), state, self.vocab, self._blas)
        self._set_state(state)
        self.save()
        if self.state_dir is not None:
            self.path = record_install(self.state_dir, new, trust, verify_key)
        return trust

    # -- what was learned -------------------------------------------------------
    def learned_words(self) -> list[LearnedWord]:
        """The personal words learned, most often seen first (``edgekit words``)."""
        return learned_words(self.state)

    def forget_word(self, word: str) -> None:
        """Remove ``word`` from everything personal, saved atomically; ``KeyError`` if never learned."""
        self._replace_state(forget_word(self.state, self.vocab, self.tokenizer.normalize(word.strip())))

    def forget_phrases(self) -> None:
        """Empty the phrase memory, saved atomically; the head and personal words stay."""
        self._replace_state(forget_phrases(self.state))

    # -- state ----------------------------------------------------------------
    def _replace_state(self, state: PersonalState) -> None:
        """Save first, then switch: a crash in between leaves the state before or after, never half."""
        if self.state_file is not None:
            self._state_folder()
            save_state(self.state_file, state)
        self._set_state(state)

    def _state_folder(self) -> None:
        """Make the state folder; a ``StateError`` naming it when it cannot be made or written."""
        if self.state_dir is None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.state_dir, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable")
        except OSError as e:
            raise StateError(f"{self.state_dir}: the personal state cannot be written there ({e.strerror or e}); "
                             "choose another folder (--state-dir, $EDGEKIT_STATE_DIR, Python: state_dir=)") from None

    def save(self) -> None:
        """Write personal state atomically (no-op for a stateless model)."""
        self._replace_state(self.state)

    def reset(self) -> None:
        """Forget everything personal: in memory and on disk."""
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        self._set_state(self._empty_state())

    def _empty_state(self) -> PersonalState:
        return PersonalState.empty(self.fingerprint, self.feature_dim, len(self.vocab), self.vocab.special_ids)

    def _set_state(self, state: PersonalState) -> None:
        self.vocab.set_personal(state.personal_words)
        self._p.use(state)
        self._suggester.vocabulary_changed()
