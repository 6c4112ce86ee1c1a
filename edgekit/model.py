"""``EdgeModel``: next-word suggestions that learn from their user, on the device.

    m = EdgeModel.load()                 # bundled model, default state dir
    m.suggest("see you tomo")            # [Suggestion("tomorrow", 0.61), ...]
    m.personalize(["text the user typed", ...])

A facade over the parts, each in its own module: the interpreter
(``runtime``), the head (``head``), ranking (``suggest``), learning
(``personal.learner``), the personal state and phrase memory
(``personal.state``, ``personal.phrases``). No TensorFlow here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .blas import blas_threads
from .errors import NotEnoughTextError
from .head import Head
from .info import ModelInfo
from .metrics import Evaluation, evaluate
from .modelfile import ModelFile, read_model_file, require_runnable, require_version_of
from .personal.learner import Learner, PersonalizeResult, take_lines
from .personal.phrases import mix
from .paths import default_state_dir
from .personal.state import PersonalState, load_state, save_state, state_path
from .personal.train import TrainConfig, softmax
from .runtime import Runtime, Scores
from .suggest import Suggester, Suggestion
from .tokenizer import Tokenizer, TokenizerConfig, text_lines
from .trust import ASSETS
from .vocab import Vocabulary

DEFAULT_MODEL = "edgekit-en-int8.tflite"
Text = str | Path | Iterable[str]


def default_model_path() -> Path:
    return ASSETS / DEFAULT_MODEL


class EdgeModel:
    """A loaded ``.tflite`` with its vocabulary, tokenizer and personal state."""

    def __init__(self, file: ModelFile, path: Path, state_dir: Path | None,
                 runtime: str | None = None, num_threads: int | None = None):
        require_runnable(file)  # before any field is read or LiteRT sees the flatbuffer
        self.path, self.file, self.state_dir = path, file, state_dir
        self.tokenizer = Tokenizer(TokenizerConfig.from_dict(file.metadata["tokenizer"]))
        self.vocab = Vocabulary(file.vocab, file.metadata.get("personal_slots", 0))
        self._blas = num_threads or 1  # host matrix products: see edgekit/blas.py
        self._runtime = Runtime(file, self.vocab, runtime, num_threads)
        self._head = Head(self._runtime)
        self._suggester = Suggester(self.tokenizer, self.vocab, self.context_length, self._scores)
        empty = PersonalState.empty(self.fingerprint, self.feature_dim, len(self.vocab), self.vocab.special_ids)
        self._set_state(empty if self.state_file is None or not self.state_file.exists() else load_state(
            self.state_file, self.fingerprint, self.feature_dim, len(self.vocab), self.vocab.special_ids,
            self.vocab.first_slot))

    @classmethod
    def load(cls, path: str | Path | None = None, *, state_dir: str | Path | None = None,
             stateless: bool = False, runtime: str | None = None, num_threads: int | None = None) -> "EdgeModel":
        """Load a model file (default: the bundled English model) and the user's state.

        ``state_dir`` defaults to ``$EDGEKIT_STATE_DIR`` or the per-user data
        folder; ``stateless=True`` neither reads nor writes personal state.
        ``num_threads`` is for learning; suggestions use one thread.
        """
        path = Path(path) if path is not None else default_model_path()
        directory = None if stateless else Path(state_dir) if state_dir is not None else default_state_dir()
        return cls(read_model_file(path), path, directory, runtime, num_threads)

    # -- facts ------------------------------------------------------------
    metadata = property(lambda self: self.file.metadata)
    fingerprint = property(lambda self: self.metadata["fingerprint"], doc="The model version.")
    context_length = property(lambda self: int(self.metadata["context_length"]))
    feature_dim = property(lambda self: int(self.metadata["feature_dim"]))
    quantization = property(lambda self: self.metadata["quantization"])
    runtime = property(lambda self: self._runtime.name, doc="The interpreter package in use.")
    max_k = property(lambda self: self._runtime.max_k, doc="The most suggestions one call can rank.")
    n_examples = property(lambda self: self.state.n_examples, doc="Examples learned since the last export.")
    base_head = property(lambda self: self._head.base, doc="The model version's float head (W [F, V], b [V]).")
    head = property(lambda self: self._head.weights, doc="Base head plus the personal delta.")

    @property
    def state_file(self) -> Path | None:
        return None if self.state_dir is None else state_path(self.state_dir, self.metadata["name"])

    def info(self) -> ModelInfo:
        return ModelInfo(str(self.path), self.metadata["name"], self.fingerprint, self.quantization,
                         self.metadata.get("compat", "litert"), self.runtime, len(self.vocab), self.context_length,
                         self.feature_dim, self.vocab.personal_slots, len(self.state.personal_words),
                         self.state.n_examples, str(self.state_file) if self.state_file else None,
                         self.path.stat().st_size if self.path.exists() else None)

    # -- inference ----------------------------------------------------------
    def suggest(self, text: str, k: int = 3) -> list[Suggestion]:
        """The ``k`` likeliest next words, or completions of the partly typed last word."""
        return self._suggester.suggest(text, k)

    def features_logits(self, ids: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The body on context ids ``[N, T]``: ``(features [N, F], logits of the file's head [N, V])``."""
        return self._runtime.features_logits(ids, progress)

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Next-word probabilities ``[N, V]`` for context ids ``[N, T]``, personal state included."""
        feats, logits = self._runtime.features_logits(ids)
        with blas_threads(self._blas):
            probs = softmax(self._head.logits(feats, logits).astype(np.float32))
            return mix(probs, self.state.phrases, ids, self.state.phrase_weight)

    def evaluate(self, text: Text, max_targets: int | None = None, progress: bool = False) -> Evaluation:
        """top1, top3, perplexity and keystroke savings on text (a ``Path``, a str, or lines)."""
        return evaluate(self.probabilities, self.vocab, self.tokenizer.iter_lines(text_lines(text)),
                        self.context_length, max_targets=max_targets, progress=progress)

    def _scores(self, ids: np.ndarray) -> Scores:
        """One context's scores: the interpreter's own outputs when nothing personal is in play."""
        if self._plain:
            return self._runtime.invoke(ids[None])
        return Scores(np.log(np.maximum(self.probabilities(ids[None])[0], 1e-30)))

    # -- personalization ----------------------------------------------------
    def personalize(self, texts: Text, config: TrainConfig | None = None, *, progress: bool = False,
                    save: bool = True) -> PersonalizeResult:
        """Learn from the user's text (a ``Path``, a str, or messages); adopted only if it helps.

        See ``edgekit.personal.learner``: the new head and phrase weight must
        beat the current state on held-out lines, new and kept from before.
        """
        cfg = config or TrainConfig()
        lines = take_lines(self.tokenizer.iter_lines(text_lines(texts)), cfg)
        if not lines:
            raise NotEnoughTextError("no text to personalize on (the text is empty)")
        learner = Learner(self.vocab, self.context_length, self._runtime.features, self.head, self.base_head,
                          self.state)
        with blas_threads(cfg.threads):
            result = learner.learn(lines, cfg, progress)
        self._set_state(self.state)
        if save:
            self.save()
        return result

    def personalize_file(self, path: str | Path, config: TrainConfig | None = None, *,
                         progress: bool = False, save: bool = True) -> PersonalizeResult:
        """``personalize`` on a UTF-8 text file, one message per line."""
        return self.personalize(Path(path), config, progress=progress, save=save)

    def head_delta(self) -> tuple[np.ndarray, np.ndarray]:
        """This device's contribution to the *shared* head since its previous export or model install.

        What head training learned from the user's text, whether or not the
        device adopted it (one device's held-out check is noisy; averaged over
        many devices the signal is not). Personal-word slots stay here.
        """
        return self.state.shared_contribution(self.vocab.first_slot)

    def consume_contribution(self) -> None:
        """Reset the contribution once an update carries it (saved); the personalization stays."""
        self.state.clear_contribution()
        self.save()

    def install_global(self, path: str | Path) -> None:
        """Switch to a new global version of this model (made by ``edgekit aggregate``).

        The user keeps their personalization on top of the new global head;
        the next export carries only what is learned from now on.
        """
        new = read_model_file(path)
        require_version_of(self.file, new, path)
        self._runtime = self._runtime.with_file(new)  # first: a file the runtime refuses changes nothing
        self.file, self.path, self._head = new, Path(path), Head(self._runtime)
        self.state.fingerprint = new.fingerprint  # the server folded contributions into the new head
        self.state.clear_contribution()
        self._set_state(self.state)
        self.save()

    # -- state ----------------------------------------------------------------
    def save(self) -> None:
        """Write personal state atomically (no-op for a stateless model)."""
        if self.state_file is not None:
            save_state(self.state_file, self.state)

    def reset(self) -> None:
        """Forget everything personal: in memory and on disk."""
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        self._set_state(PersonalState.empty(self.fingerprint, self.feature_dim, len(self.vocab),
                                            self.vocab.special_ids))

    def _set_state(self, state: PersonalState) -> None:
        self.vocab.set_personal(state.personal_words)
        self.state = state
        self._head.set_delta(state.delta_w, state.delta_b)
        self._suggester.clear()
        # Nothing personal: suggestions are the interpreter's outputs as they come, its ranking included.
        self._plain = not (self._head.on_host or (state.phrase_weight and len(state.phrases))
                           or state.personal_words)
