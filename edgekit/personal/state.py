"""Personal state on the device: versioned, bound to one model version, crash-safe.

One file per model name in the state directory, ``<name>.edgekit-state``: an
``.npz`` (no pickle) holding the head delta, personal words, phrase memory,
and a JSON ``meta`` record with the format version and the model fingerprint.
State made for another model version is refused, never silently mixed in.
The head weight's changes are kept by column (``Columns``); version 1 files,
which hold them as whole ``[F, V]`` arrays, still load.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..atomic import atomic_write_bytes
from ..bounded import ArraySpec, Unreadable, read_npz
from ..errors import StateError
from ..head import Columns
from .phrases import ORDER, PhraseMemory

STATE_FORMAT = "edgekit-state"
STATE_VERSION = 2  # 2: head weight changes by column (``Columns``); 1 (whole [F, V] arrays) still loads
READ_VERSIONS = (1, 2)
SUFFIX = ".edgekit-state"
REQUIRED = {"meta", "delta_w", "delta_b", "phrases_unigram", "phrases_ngrams"}
MAX_PHRASE_WEIGHT = 2.0  # a scale of the fitted phrase gate (learner.PHRASE_WEIGHTS tops out at 1.25)
MAX_ABS_DELTA = 1e3  # a personal change to one head weight; training moves them by well under 1
MAX_PERSONAL_WORD_CHARS = 32  # the bundled vocabulary's longest word has 22
MAX_NGRAM_ROWS = 4_000_000  # phrase memory entries (32 bytes each on disk)
MAX_HELDOUT_BYTES = 4 << 20  # 10,000 kept tokens of at most 64 characters, with room
MAX_NAME_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class PersonalState:
    """What personalization learned; empty for a fresh user."""

    fingerprint: str
    delta_w: Columns  # [F, V] change to the head weight
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
    contrib_w: Columns | None = None
    contrib_b: np.ndarray | None = None
    # Earlier held-out lines (tokens, oldest first): a later personalization is
    # adopted only if it does not do worse on these as well as on its own.
    heldout: list[list[str]] = field(default_factory=list)
    # Per kept held-out line: it did not occur verbatim in the text learned with it. These
    # "new" lines stand for what the user has not written before: no adoption may lose on them.
    heldout_new: list[bool] = field(default_factory=list)

    @classmethod
    def empty(cls, fingerprint: str, feature_dim: int, vocab_size: int, skip_ids: Iterable[int]) -> PersonalState:
        return cls(fingerprint, Columns.zeros(feature_dim, vocab_size), np.zeros(vocab_size, np.float32),
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
        return self.contrib_w.dense(first_slot), self.contrib_b[:first_slot].copy()

    @property
    def is_empty(self) -> bool:
        return not self.n_examples and not len(self.phrases) and not self.personal_words


def state_path(state_dir: str | Path, model_name: str) -> Path:
    """``<state_dir>/<name>.edgekit-state``, the name reduced to a fixed character set: always inside ``state_dir``.

    The name comes from the model file, which anyone can write: an absolute
    or ``../`` name must not place (or let ``reset`` delete) a file elsewhere.
    Letters, digits, ``.``, ``_`` and ``-`` are kept, anything else becomes
    ``_``; a name made only of dots becomes ``model``.
    """
    safe = _UNSAFE.sub("_", model_name)[:MAX_NAME_CHARS].lstrip(".") or "model"
    return Path(state_dir) / f"{safe}{SUFFIX}"


def save_state(path: str | Path, state: PersonalState) -> None:
    """Atomic: a crash during the save leaves the previous state readable."""
    meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "fingerprint": state.fingerprint,
            "personal_words": state.personal_words, "phrase_weight": state.phrase_weight,
            "phrase_gate": None if state.phrase_gate is None else [float(v) for v in state.phrase_gate],
            "n_examples": state.n_examples, "history": state.history[-20:]}
    arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                              "delta_ids": state.delta_w.ids, "delta_w": state.delta_w.values,
                              "delta_b": state.delta_b, **state.phrases.to_arrays(), **_contribution(state),
                              **_heldout(state)}
    atomic_write_bytes(path, _npz(arrays), mode=0o600)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez_compressed``'s file at deflate level 1: every learning saves the state, and
    level 1 took 20 ms where the default took 50 ms, for a file 12% larger (1,000 SMS lines)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
    return buf.getvalue()


def load_state(path: str | Path, fingerprint: str, feature_dim: int, vocab_size: int, skip_ids: Iterable[int],
               first_slot: int | None = None) -> PersonalState:
    """Load and check the state at ``path``; any problem is a ``StateError`` that says to reset.

    Arrays are checked by their headers before they are read (types,
    shapes, bounded sizes: ``edgekit.bounded``), then by value: finite, head
    changes within ``MAX_ABS_DELTA``, ids in the vocabulary, personal words
    in the reserved slots (from ``first_slot``) and no longer than
    ``MAX_PERSONAL_WORD_CHARS``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            arrays = read_npz(f, _specs(feature_dim, vocab_size), REQUIRED)
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        _check_meta(meta, fingerprint, vocab_size if first_slot is None else first_slot, vocab_size)
        for key in ("delta_w", "delta_b", "contrib_w", "contrib_b"):
            _want(key not in arrays or _bounded(arrays[key]), f"{key} holds non-finite values or values over "
                  f"{MAX_ABS_DELTA:g}")
        parts = [key in arrays for key in ("contrib_w", "contrib_b")]
        _want(parts[0] == parts[1] and (parts[0] or "contrib_ids" not in arrays),
              "the contribution lacks some of its arrays")
        delta_w, delta_b = _columns(arrays, "delta_w", "delta_ids", vocab_size), arrays["delta_b"]
        contrib_w = _columns(arrays, "contrib_w", "contrib_ids", vocab_size) if "contrib_w" in arrays else None
        phrases = PhraseMemory.from_arrays(vocab_size, skip_ids, arrays)
        heldout = [line.split(" ") for line in arrays["heldout"].tobytes().decode("utf-8").split("\n")] \
            if "heldout" in arrays else []
    except StateError as e:
        raise StateError(f"{path}: {e}") from None
    except (Unreadable, OSError, ValueError, RecursionError, TypeError) as e:  # UnicodeDecodeError is a ValueError
        raise StateError(f"{path}: personal state is corrupt ({e}); move it away or run `edgekit reset`") from None
    new = [bool(f) for f in arrays.get("heldout_new", np.zeros(len(heldout), np.uint8))]
    if len(new) != len(heldout):
        raise StateError(f"{path}: held-out text has {len(heldout)} lines but {len(new)} flags; run `edgekit reset`")
    return PersonalState(meta["fingerprint"], delta_w, delta_b, phrases, dict(meta.get("personal_words", {})),
                         float(meta.get("phrase_weight", 0.0)), _gate(meta.get("phrase_gate")),
                         int(meta.get("n_examples", 0)), list(meta.get("history", [])), contrib_w,
                         arrays.get("contrib_b"), heldout, new)


def _gate(values: object) -> np.ndarray | None:
    if values is None:
        return None
    gate = np.asarray(values, np.float32)
    if gate.shape != (4,) or not np.isfinite(gate).all():
        raise StateError(f"personal state has a bad phrase gate {values!r}; run `edgekit reset`")
    return gate


def _specs(f: int, v: int) -> dict[str, ArraySpec]:
    # A weight change: by column (its ids beside it), or whole in a version 1 file; at most V columns.
    head, ids, bias = ArraySpec("<f4", (f, None), 4 * f * v), ArraySpec("<i8", (None,), 8 * v), ArraySpec("<f4", (v,))
    return {"meta": ArraySpec("|u1", (None,), 1 << 20), "delta_w": head, "delta_ids": ids, "delta_b": bias,
            "contrib_w": head, "contrib_ids": ids, "contrib_b": bias,
            "phrases_unigram": ArraySpec("<i8", (None, 2), 16 * v),
            "phrases_ngrams": ArraySpec("<i8", (None, ORDER + 1), 8 * (ORDER + 1) * MAX_NGRAM_ROWS),
            "heldout": ArraySpec("|u1", (None,), MAX_HELDOUT_BYTES),
            "heldout_new": ArraySpec("|u1", (None,), MAX_HELDOUT_BYTES)}


def _check_meta(meta: Any, fingerprint: str, first_slot: int, vocab_size: int) -> None:
    """Types and ranges of the JSON record; another model version is refused with its own message."""
    _want(isinstance(meta, dict), "meta is not a JSON object")
    if meta.get("format") != STATE_FORMAT or meta.get("format_version") not in READ_VERSIONS:
        raise StateError(f"state format {meta.get('format')!r} v{meta.get('format_version')!r} "
                         f"is not {STATE_FORMAT} v{STATE_VERSION}; run `edgekit reset` to start over")
    if meta.get("fingerprint") != fingerprint:
        raise StateError(f"this personal state belongs to another model version "
                         f"(fingerprint {meta.get('fingerprint')}, this model is {fingerprint}); "
                         "use the model it was made with, or give this one its own state folder (--state-dir; "
                         "Python: state_dir= or stateless=True); `edgekit reset` deletes the personal state")
    words = meta.get("personal_words", {})
    _want(isinstance(words, dict) and len(words) <= vocab_size - first_slot, "personal_words is not a word -> slot map")
    _want(all(isinstance(w, str) and 0 < len(w) <= MAX_PERSONAL_WORD_CHARS and not any(c.isspace() for c in w)
              and _is_int(s) and first_slot <= s < vocab_size for w, s in words.items())
          and len(set(words.values())) == len(words), "personal_words has a bad word or slot")
    weight = meta.get("phrase_weight", 0.0)
    _want(isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0.0 <= weight <= MAX_PHRASE_WEIGHT,
          f"phrase_weight = {weight!r}, expected a number in 0..{MAX_PHRASE_WEIGHT:g}")
    n = meta.get("n_examples", 0)
    _want(_is_int(n) and 0 <= n <= 1 << 53, f"n_examples = {n!r}, expected a whole number")
    history = meta.get("history", [])
    _want(isinstance(history, list) and all(isinstance(h, dict) for h in history), "history is not a list")


def _bounded(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all()) and float(np.abs(a).max(initial=0.0)) <= MAX_ABS_DELTA


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _want(ok: object, problem: str) -> None:
    if not ok:
        raise StateError(f"personal state is corrupt ({problem}); move it away or run `edgekit reset`")


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
    return {"contrib_ids": state.contrib_w.ids, "contrib_w": state.contrib_w.values, "contrib_b": state.contrib_b}


def _columns(arrays: dict[str, np.ndarray], key: str, ids_key: str, vocab_size: int) -> Columns:
    """A head weight change as read: by column, or (a version 1 file, no ids) as a whole ``[F, V]`` array."""
    values = arrays[key]
    if ids_key not in arrays:
        _want(values.shape[1] == vocab_size, f"{key} has shape {values.shape}, expected {vocab_size} columns")
        return Columns.from_dense(values)
    ids = arrays[ids_key]
    _want(len(ids) == values.shape[1], f"{key} has shape {values.shape} but {ids_key} names {len(ids)} columns")
    _want(not len(ids) or (ids[0] >= 0 and ids[-1] < vocab_size and bool((np.diff(ids) > 0).all())),
          f"{ids_key} is not increasing column ids below {vocab_size}")
    return Columns(ids, values, vocab_size)
