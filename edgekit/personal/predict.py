"""Next-word scores with the personal state in play: the head's change, then the phrase memory.

With nothing personal in play the interpreter's outputs serve as they come,
its word ranking included: the keyboard's hot path. Otherwise the head's
change is added on the host and, where the phrase memory has evidence for
the context, its probabilities are mixed in.
"""
from __future__ import annotations

import numpy as np

from ..blas import blas_threads
from ..head import Head
from ..runtime import Runtime, Scores
from .gate import mix
from .state import PersonalState
from .train import softmax


class Predictor:
    """The interpreter, the head and the personal state, as one scorer of contexts."""

    def __init__(self, runtime: Runtime, head: Head, state: PersonalState, blas_threads: int = 1):
        self.runtime, self.head, self._blas = runtime, head, blas_threads
        self.use(state)

    def use(self, state: PersonalState) -> None:
        """Score with ``state`` from now on (its head delta included)."""
        self.state = state
        self.head.set_delta(state.delta_w, state.delta_b)
        self.plain = not (self.head.on_host or (state.phrase_weight and len(state.phrases))
                          or state.personal_words)

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Next-word probabilities ``[N, V]`` for context ids ``[N, T]``."""
        feats, logits = self.runtime.features_logits(ids)
        st = self.state
        with blas_threads(self._blas):
            probs = softmax(self.head.logits(feats, logits).astype(np.float32))
            return mix(probs, st.phrases, ids, st.phrase_weight, st.phrase_gate)

    def scores(self, ids: np.ndarray) -> Scores:
        """One context's (``[T]``) log-scale scores, for ranking."""
        if self.plain:
            return self.runtime.invoke(ids[None])
        feats, logits = self.runtime.features_logits(ids[None])
        personal, st = self.head.logits(feats, logits), self.state
        if not (st.phrase_weight and st.phrases.evidence(ids.tolist())):  # no phrase to mix in: logits rank as they are
            return Scores(personal[0])
        probs = mix(softmax(personal.astype(np.float32)), st.phrases, ids[None], st.phrase_weight, st.phrase_gate)
        return Scores(np.log(np.maximum(probs[0], 1e-30)))

    def features_scores(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, this head's logits and the version's for contexts ``[N, T]``: what learning reads."""
        feats, logits = self.runtime.features_logits(ids)
        return feats, self.head.logits(feats, logits), self.head.base_logits(feats, logits)
