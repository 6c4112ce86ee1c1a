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
refused here, before the interpreter (native code) ever sees it.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_write_bytes
from .errors import ModelFileError

FORMAT = "edgekit-model"
FORMAT_VERSION = 1
METADATA_NAME = "edgekit.json"
VOCAB_NAME = "vocab.txt"
HEAD_NAME = "head.npz"
TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, bytes 4..8


@dataclass
class ModelFile:
    """The parts of an edgekit model file, in memory."""

    flatbuffer: bytes
    metadata: dict
    vocab: list[str]
    head: tuple[np.ndarray, np.ndarray] | None = None  # (weight [F, V], bias [V]) override
    extras: dict[str, bytes] = field(default_factory=dict)

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


def write_model_file(path: str | Path, model: ModelFile) -> None:
    """Write atomically: a crash never leaves half a model at ``path``."""
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
    # Offsets inside the zip are relative to its own start; zipfile finds the
    # archive from its end record, so prepending the flatbuffer is safe.
    atomic_write_bytes(path, model.flatbuffer + buf.getvalue())
    model.metadata = meta


def read_model_file(path: str | Path) -> ModelFile:
    """Read and validate; every failure is a ``ModelFileError`` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a .tflite model file")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise ModelFileError(f"{path}: not a TensorFlow Lite model (missing the TFL3 identifier)")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        meta = json.loads(z.read(METADATA_NAME))
        vocab = z.read(VOCAB_NAME).decode("utf-8").split("\n")[:-1]
        head = _read_head(z) if HEAD_NAME in z.namelist() else None
        extras = {n: z.read(n) for n in z.namelist() if n not in (METADATA_NAME, VOCAB_NAME, HEAD_NAME)}
    except (zipfile.BadZipFile, KeyError):
        raise ModelFileError(
            f"{path}: a TensorFlow Lite file without edgekit metadata (or truncated); "
            "make one with `edgekit convert`") from None
    except (ValueError, OSError, zipfile.LargeZipFile) as e:
        raise ModelFileError(f"{path}: corrupt edgekit metadata ({e})") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {meta.get('format')!r} v{meta.get('format_version')!r}, "
                             f"this edgekit reads {FORMAT} v{FORMAT_VERSION}; upgrade edgekit or re-convert")
    flat = data[: meta.get("tflite_bytes", -1)]
    if len(flat) != meta.get("tflite_bytes") or sha256_hex(flat) != meta.get("tflite_sha256"):
        raise ModelFileError(f"{path}: model is corrupt (the TensorFlow Lite part fails its checksum)")
    if len(vocab) != meta.get("vocab_size"):
        raise ModelFileError(f"{path}: vocabulary has {len(vocab)} entries, metadata says {meta.get('vocab_size')}")
    if head is not None and head[0].shape != (meta["feature_dim"], len(vocab)):
        raise ModelFileError(f"{path}: head override has shape {head[0].shape}, "
                             f"expected {(meta['feature_dim'], len(vocab))}")
    return ModelFile(flatbuffer=flat, metadata=meta, vocab=vocab, head=head, extras=extras)


def require_version_of(current: ModelFile, new: ModelFile, path: str | Path) -> None:
    """Refuse ``new`` unless it is a version of ``current``'s model: the same body and vocabulary.

    Only the head changes between versions, so personal state (head delta,
    personal-word slots, phrase memory) keeps its meaning across them.
    """
    if new.metadata.get("body_sha256") != current.metadata.get("body_sha256") or new.vocab != current.vocab:
        raise ModelFileError(f"{path}: not a version of this model (its body or vocabulary differs); "
                             "load it as a new model instead")


def _read_head(z: zipfile.ZipFile) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(z.read(HEAD_NAME)), allow_pickle=False) as npz:
        return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)
