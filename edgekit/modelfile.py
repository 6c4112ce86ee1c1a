"""The edgekit model file: one ``.tflite`` that carries everything a device needs.

Layout: the TensorFlow Lite flatbuffer, followed by a zip archive (the same
trick the TFLite metadata tools use for vocabularies and labels; interpreters
read the flatbuffer and ignore what follows). The archive holds:

- ``edgekit.json``: format version, tokenizer rules, context length, tensor
  names, quantization, and the hashes that identify the model version;
- ``vocab.txt``: one token per line, index = token id;
- optionally ``head.npz``: a float head (``weight`` [features, vocab],
  ``bias`` [vocab]) that replaces the one inside the flatbuffer. This is how a
  server ships a new global head without re-running the TensorFlow converter.

The flatbuffer's SHA-256 is recorded, so a corrupt or truncated file is
refused here, before the interpreter (native code) ever sees it. That hash
sits in the same unauthenticated zip, so it proves nothing against someone
who can write the file: reading also bounds every size, checks every field
and parses the flatbuffer's structure (see ``read_model_file``).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_write_bytes
from .bounded import ArraySpec, Unreadable, open_zip, read_entry, read_npz
from .errors import ModelFileError
from .flatbuffer_check import check_flatbuffer
from .model_schema import (
    check_graph,
    check_head,
    check_metadata,
    check_runnable,
    check_vocab,
)
from .trust import origin

FORMAT = "edgekit-model"
FORMAT_VERSION = 1
METADATA_NAME = "edgekit.json"
VOCAB_NAME = "vocab.txt"
HEAD_NAME = "head.npz"
TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, bytes 4..8
# Bounds on what a model file may hold, checked before and while inflating.
MAX_FILE_BYTES = 512 << 20
MAX_ENTRIES = 16
ENTRY_LIMITS = {METADATA_NAME: 1 << 20, VOCAB_NAME: 32 << 20, HEAD_NAME: 320 << 20}
EXTRA_LIMIT = 16 << 20  # any other entry
MAX_INFLATED = 512 << 20  # all entries together
FIX = "get a fresh copy of the model, or re-convert it with `edgekit convert`"


@dataclass
class ModelFile:
    """The parts of an edgekit model file, in memory."""

    flatbuffer: bytes
    metadata: dict
    vocab: list[str]
    head: tuple[np.ndarray, np.ndarray] | None = None  # (weight [F, V], bias [V]) override
    extras: dict[str, bytes] = field(default_factory=dict)
    # What vouches for it: "bundled" (pinned in edgekit.trust) or nothing ("local"); a device's loader
    # (``edgekit.model.read_trusted``) adds "installed" and "signed" (``edgekit.installed``).
    origin: str = "local"
    path: Path | None = field(default=None, compare=False)  # where it was read from
    runnable: bool = field(default=False, repr=False, compare=False)  # passed ``require_runnable``

    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_arrays(arrays: Iterable[np.ndarray]) -> str:
    """Stable hash of float weights: shape and little-endian float32 bytes of each."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype="<f4")
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def make_fingerprint(body_sha256: str, head_sha256: str, vocab: list[str]) -> str:
    """Model version id: binds body, head and vocabulary (16 bytes, hex).

    Quantized variants of one Keras model share a fingerprint: they are the
    same model version, so personal state and federated updates move freely
    between them. A new head (federated round) gives a new fingerprint.
    """
    vocab_hash = sha256_hex("\n".join(vocab).encode())
    return sha256_hex(f"{body_sha256}:{head_sha256}:{vocab_hash}".encode())[:32]


def complete_metadata(model: ModelFile) -> dict:
    """The metadata exactly as ``write_model_file`` writes it (what a signature must cover)."""
    meta = dict(model.metadata)
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, tflite_bytes=len(model.flatbuffer),
                tflite_sha256=sha256_hex(model.flatbuffer), vocab_size=len(model.vocab))
    return meta


def model_file_bytes(model: ModelFile) -> bytes:
    """The file's bytes: flatbuffer, then the zip part (``model.metadata`` gets the derived fields)."""
    meta = complete_metadata(model)
    entries = {METADATA_NAME: json.dumps(meta, indent=1, sort_keys=True).encode(),
               VOCAB_NAME: ("\n".join(model.vocab) + "\n").encode()}
    if model.head is not None:
        hb = io.BytesIO()
        np.savez(hb, weight=model.head[0].astype(np.float32), bias=model.head[1].astype(np.float32))
        entries[HEAD_NAME] = hb.getvalue()
    entries.update(model.extras)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            # A fixed timestamp: the same model gives a byte-identical file.
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    model.metadata = meta
    # Offsets inside the zip are relative to its own start; zipfile finds the
    # archive from its end record, so prepending the flatbuffer is safe.
    return model.flatbuffer + buf.getvalue()


def write_model_file(path: str | Path, model: ModelFile) -> None:
    """Write atomically: a crash never leaves half a model at ``path``."""
    atomic_write_bytes(path, model_file_bytes(model))


def read_model_file(path: str | Path) -> ModelFile:
    """Read and validate; every failure is a ``ModelFileError`` naming the file, the problem and the fix.

    Sizes are bounded before and while anything is inflated (``edgekit.bounded``),
    ``edgekit.json``, the vocabulary and a head override are checked
    (``edgekit.model_schema``), the flatbuffer is parsed and checked before
    any interpreter sees it (``edgekit.flatbuffer_check``), and the
    fingerprint is recomputed from what the device can recompute.
    """
    path = Path(path)
    data = _read_bounded(path)
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{path}: not a TensorFlow Lite model (missing the TFL3 identifier)")
    source = origin(path, data)
    try:
        return replace(_parse(data, path), origin=source, path=path)
    except (Unreadable, ModelFileError) as e:
        if str(e).startswith(f"{path}: "):  # a message that names the file says what to do already
            raise
        raise ModelFileError(f"{path}: {e}; {FIX}") from None


def _read_bounded(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ModelFileError(f"{path}: is a directory, expected a .tflite model file")
        if size > MAX_FILE_BYTES:
            raise ModelFileError(f"{path}: {size} bytes, more than any edgekit model ({MAX_FILE_BYTES}); {FIX}")
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None


def _parse(data: bytes, path: Path) -> ModelFile:
    try:
        z = open_zip(data, MAX_ENTRIES)
        raw_meta = read_entry(z, METADATA_NAME, ENTRY_LIMITS[METADATA_NAME])
    except Unreadable:
        raise ModelFileError(f"{path}: a TensorFlow Lite file without edgekit metadata (or truncated); "
                             "make one with `edgekit convert`") from None
    try:
        meta = json.loads(raw_meta)
    except (ValueError, RecursionError):
        raise ModelFileError("edgekit.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        got = meta if isinstance(meta, dict) else {}
        raise ModelFileError(f"{path}: model format {got.get('format')!r} v{got.get('format_version')!r}, "
                             f"this edgekit reads {FORMAT} v{FORMAT_VERSION}; upgrade edgekit or re-convert")
    check_metadata(meta)
    declared = sum(i.file_size for i in z.infolist())
    if declared > MAX_INFLATED:
        raise ModelFileError(f"its parts inflate to {declared} bytes (at most {MAX_INFLATED})")
    flat = data[: meta["tflite_bytes"]]
    if len(flat) != meta["tflite_bytes"] or sha256_hex(flat) != meta["tflite_sha256"]:
        raise ModelFileError("model is corrupt (the TensorFlow Lite part fails its checksum)")
    vocab = check_vocab(read_entry(z, VOCAB_NAME, ENTRY_LIMITS[VOCAB_NAME]), meta)
    head = _read_head(z, meta) if HEAD_NAME in z.namelist() else None
    extras = {n: read_entry(z, n, EXTRA_LIMIT) for n in z.namelist() if n not in ENTRY_LIMITS}
    _check_fingerprint(meta, vocab, head)
    return ModelFile(flatbuffer=flat, metadata=meta, vocab=vocab, head=head, extras=extras)


def _check_fingerprint(meta: dict, vocab: list[str], head: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Recompute what the device can: the vocabulary's hash, a head override's hash, the fingerprint over them.

    The body hash (and, without an override, the head hash) are of Keras
    weights the device never has; the flatbuffer they became is bound by
    its SHA-256 (checked above, but rewritable with it) and, for the files
    edgekit ships, by the pins in ``edgekit.trust``. An edited flatbuffer in
    any other file keeps its fingerprint until model versions are signed.
    """
    if head is not None and hash_arrays(head) != meta["head_sha256"]:
        raise ModelFileError("the head override does not match its head_sha256 (the head was edited)")
    if make_fingerprint(meta["body_sha256"], meta["head_sha256"], vocab) != meta["fingerprint"]:
        raise ModelFileError("the fingerprint does not match the model's hashes and vocabulary (edited)")


def require_runnable(file: ModelFile) -> None:
    """The checks before an interpreter sees ``file``: the runtime's fields, and the flatbuffer's structure.

    ``read_model_file`` checks what every reader needs (a server installing
    a head never runs the flatbuffer); ``Runtime`` calls this before LiteRT
    loads anything. Done once per ``ModelFile`` (its parts are not changed
    after reading; a new version is a new ``ModelFile``).
    """
    if file.runnable:
        return
    try:
        check_runnable(file.metadata, file.vocab)
        check_graph(file.metadata, check_flatbuffer(file.flatbuffer))
    except ModelFileError as e:
        raise ModelFileError(f"{file.path or 'model file'}: {e}; {FIX}") from None
    file.runnable = True


def require_version_of(current: ModelFile, new: ModelFile, path: str | Path) -> None:
    """Refuse ``new`` unless it is a version of ``current``'s model: the same body and vocabulary.

    Only the head changes between versions, so personal state (head delta,
    personal-word slots, phrase memory) keeps its meaning across them.
    """
    if new.metadata.get("body_sha256") != current.metadata.get("body_sha256") or new.vocab != current.vocab:
        raise ModelFileError(f"{path}: not a version of this model (its body or vocabulary differs); "
                             "load it as a new model instead")


def _read_head(z: zipfile.ZipFile, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """A head override: its arrays' headers say ``[features, vocab]`` and ``[vocab]`` float32, or it is refused."""
    f, v = meta["feature_dim"], meta["vocab_size"]
    specs = {"weight": ArraySpec("<f4", (f, v)), "bias": ArraySpec("<f4", (v,))}
    head = read_npz(io.BytesIO(read_entry(z, HEAD_NAME, ENTRY_LIMITS[HEAD_NAME])), specs, set(specs))
    weights = (head["weight"], head["bias"])
    check_head(weights, meta)
    return weights
