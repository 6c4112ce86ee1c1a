"""Personal state on the device: versioned, bound to one model version, crash-safe.

One file per model name in the state directory, ``<name>.edgekit-state``: an
``.npz`` (no pickle) holding the head delta, personal words, phrase memory,
and a JSON ``meta`` record with the format version and the model fingerprint.
State made for another model version is refused, never silently mixed in.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import StateError
from .phrases import PhraseMemory

STATE_FORMAT = "edgekit-state"
STATE_VERSION = 1
SUFFIX = ".edgekit-state"


@dataclass
class PersonalState:
    """What personalization learned; empty for a fresh user."""

    fingerprint: str
    delta_w: np.ndarray  # [F, V] change to the head weight
    delta_b: np.ndarray  # [V]
    phrases: PhraseMemory
    personal_words: dict[str, int] = field(default_factory=dict)
    phrase_weight: float = 0.0
    phrase_gate: np.ndarray | None = None  # the phrase memory's share per context (``gate``); None: the default
    n_examples: int = 0  # examples behind the contribution
    history: list[dict] = field(default_factory=list)
    # The federated contribution: what head training learned from this user's
    # text since the previous export (or, before any, since the model version
    # was installed), whether or not the device adopted it for its own
    # suggestions. ``None`` until there is one.
    contrib_w: np.ndarray | None = None
    contrib_b: np.ndarray | None = None
    # Earlier held-out lines (tokens, oldest first): a later personalization is
    # adopted only if it does not do worse on these as well as on its own.
    heldout: list[list[str]] = field(default_factory=list)
    # Per kept held-out line: it did not occur verbatim in the text learned with it. These
    # "new" lines stand for what the user has not written before: no adoption may lose on them.
    heldout_new: list[bool] = field(default_factory=list)

    @classmethod
    def empty(cls, fingerprint: str, feature_dim: int, vocab_size: int, skip_ids: Iterable[int]) -> PersonalState:
        return cls(fingerprint, np.zeros((feature_dim, vocab_size), np.float32), np.zeros(vocab_size, np.float32),
                   PhraseMemory(vocab_size, skip_ids))

    def clear_contribution(self) -> None:
        """Start the contribution from zero: an update or a new global version now holds it.

        Only what the federation gets is reset; the personal head delta, words
        and phrases (what the user sees) stay.
        """
        self.n_examples, self.contrib_w, self.contrib_b = 0, None, None

    def shared_contribution(self, first_slot: int) -> tuple[np.ndarray, np.ndarray]:
        """The contribution's shared rows (ids below ``first_slot``): personal-word slots never leave."""
        if self.contrib_w is None or self.contrib_b is None:
            return np.zeros((self.delta_w.shape[0], first_slot), np.float32), np.zeros(first_slot, np.float32)
        return self.contrib_w[:, :first_slot].copy(), self.contrib_b[:first_slot].copy()

    @property
    def is_empty(self) -> bool:
        return not self.n_examples and not len(self.phrases) and not self.personal_words


def state_path(state_dir: str | Path, model_name: str) -> Path:
    return Path(state_dir) / f"{model_name}{SUFFIX}"


def save_state(path: str | Path, state: PersonalState) -> None:
    """Atomic: a crash during the save leaves the previous state readable."""
    meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "fingerprint": state.fingerprint,
            "personal_words": state.personal_words, "phrase_weight": state.phrase_weight,
            "phrase_gate": None if state.phrase_gate is None else [float(v) for v in state.phrase_gate],
            "n_examples": state.n_examples, "history": state.history[-20:]}
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                              "delta_w": state.delta_w, "delta_b": state.delta_b, **state.phrases.to_arrays(),
                              **_contribution(state), **_heldout(state)}
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), mode=0o600)


def load_state(path: str | Path, fingerprint: str, feature_dim: int, vocab_size: int, skip_ids: Iterable[int]) -> PersonalState:
    """Load and check the state at ``path``; raises ``StateError`` naming the problem."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise StateError(f"{path}: personal state is corrupt ({e}); move it away or run `edgekit reset`") from None
    if meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
        raise StateError(f"{path}: state format {meta.get('format')!r} v{meta.get('format_version')!r} "
                         f"is not {STATE_FORMAT} v{STATE_VERSION}")
    if meta.get("fingerprint") != fingerprint:
        raise StateError(f"{path}: this personal state belongs to another model version "
                         f"(fingerprint {meta.get('fingerprint')}, this model is {fingerprint}); "
                         "use the model it was made with, or run `edgekit reset` to start over")
    dw, db = arrays["delta_w"], arrays["delta_b"]
    if dw.shape != (feature_dim, vocab_size) or db.shape != (vocab_size,):
        raise StateError(f"{path}: head delta has shape {dw.shape}, expected {(feature_dim, vocab_size)}")
    if not (np.isfinite(dw).all() and np.isfinite(db).all()):
        raise StateError(f"{path}: personal state holds non-finite values; run `edgekit reset`")
    try:
        phrases = PhraseMemory.from_arrays(vocab_size, skip_ids, arrays)
    except (KeyError, ValueError, IndexError) as e:
        raise StateError(f"{path}: phrase memory is corrupt ({e})") from None
    try:
        heldout = [line.split(" ") for line in arrays["heldout"].tobytes().decode("utf-8").split("\n")] \
            if "heldout" in arrays else []
    except UnicodeDecodeError as e:
        raise StateError(f"{path}: held-out text is corrupt ({e}); run `edgekit reset`") from None
    new = [bool(f) for f in arrays.get("heldout_new", np.zeros(len(heldout), np.uint8))]
    if len(new) != len(heldout):
        raise StateError(f"{path}: held-out text has {len(heldout)} lines but {len(new)} flags; run `edgekit reset`")
    return PersonalState(meta["fingerprint"], dw.astype(np.float32), db.astype(np.float32), phrases,
                         {str(k): int(v) for k, v in meta.get("personal_words", {}).items()},
                         float(meta.get("phrase_weight", 0.0)), _gate(meta.get("phrase_gate")),
                         int(meta.get("n_examples", 0)),
                         list(meta.get("history", [])), arrays.get("contrib_w"), arrays.get("contrib_b"), heldout,
                         new)


def _gate(values: object) -> np.ndarray | None:
    if values is None:
        return None
    gate = np.asarray(values, np.float32)
    if gate.shape != (4,) or not np.isfinite(gate).all():
        raise StateError(f"personal state has a bad phrase gate {values!r}; run `edgekit reset`")
    return gate


def _heldout(state: PersonalState) -> dict[str, np.ndarray]:
    """Tokens never hold spaces or newlines, so one UTF-8 text keeps the lines exactly."""
    if not state.heldout:
        return {}
    text = "\n".join(" ".join(line) for line in state.heldout)
    return {"heldout": np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
            "heldout_new": np.array(state.heldout_new, dtype=np.uint8)}


def _contribution(state: PersonalState) -> dict[str, np.ndarray]:
    if state.contrib_w is None or state.contrib_b is None:
        return {}
    return {"contrib_w": state.contrib_w, "contrib_b": state.contrib_b}
