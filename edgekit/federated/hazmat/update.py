"""The update file: what one device sends to the server, sealed with HPKE.

Layout (all integers big-endian)::

    magic   8 bytes  b"EKUPDATE"
    version uint16   FORMAT_VERSION
    hlen    uint32   length of the header
    header  hlen     canonical JSON (sorted keys, no spaces, ASCII)
    sealed  rest     HPKE single-shot ciphertext: enc (32) || AEAD(identity || zlib(encoded delta))

    identity (v2)    1 byte 0: no device key; or 1, then the device's Ed25519
                     public key (32) and its signature (64) over
                     SIGNATURE_DOMAIN || everything before ``sealed`` || zlib(...)

Version 1 had no identity block: its plaintext is the compressed delta alone.
This edgekit writes v2 and reads both; a round that requires enrolled devices
refuses v1 before decrypting it (reason ``old-format``).

Everything before ``sealed`` is the HPKE ``info``: it enters the key schedule,
so changing any header byte (or the magic/version/length) makes decryption
fail, and a header cannot be moved onto another payload. The header stays in
clear so the server can refuse an update for another model, key or policy,
or a replayed id, before spending any work on it.

The device's signature sits inside the ciphertext on purpose: the server
learns which enrolled device sent an update (and counts one per device per
round), an eavesdropper learns no identity, not even that two files came
from one device (only, from the size, whether a file is signed). HPKE's base mode alone authenticates no sender.

Anyone holding the server's public key can make a well-formed update, so
every field is checked again after decryption (shape, finiteness, norm) and
decompression is bounded by the size the expected shape implies.
"""
from __future__ import annotations

import json
import math
import re
import secrets
import struct
import zlib
from collections.abc import Container, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ...signing import verify_key_id
from ..keys import SUITE, SUITE_NAME, key_id, load_public_key
from .delta import (
    DEFAULT_CLIP_NORM,
    DEFAULT_ENCODING,
    DEFAULT_MAX_ROW_SHARE,
    ENCODINGS,
    Delta,
    UpdateError,
    decode_delta,
    encode_delta,
    encoded_size,
    norm_bound,
    privatize,
    validate_delta,
    validate_rows,
)

MAGIC = b"EKUPDATE"
UPDATE_SUFFIX = ".edgekit-update"  # file name ending of update files: what `aggregate FOLDER` reads
FORMAT_VERSION = 2  # what this edgekit writes
READ_VERSIONS = (1, 2)  # what it reads (v1: no identity block)
SIGNATURE_DOMAIN = b"edgekit-update-signature-v2\n"
_ANONYMOUS, _ED25519 = 0, 1
_IDENTITY_BYTES = 1 + 32 + 64
COMPRESSION = "zlib"
MAX_HEADER_BYTES = 4096
MAX_ELEMENTS = 1 << 28  # 256M head entries: far above any keyboard model, bounds allocations
# The most examples one update may claim: a header over it is refused (a claim of 2^53-1
# would otherwise count, and make a round's total absurd). FedAvg weights are further
# capped relative to the round's median claim (``aggregate_updates``).
DEFAULT_MAX_EXAMPLES = 10_000
_PREFIX = struct.Struct(">8sHI")
HEADER_PREFIX_BYTES = _PREFIX.size + MAX_HEADER_BYTES  # a file's first bytes that always hold its header
_HPKE_OVERHEAD = 32 + 16  # X25519 encapsulated key + Poly1305 tag
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class UpdateHeader:
    """The clear-text, authenticated description of one update."""

    model_fingerprint: str
    update_id: str  # 128 random bits, hex: the server refuses an id it has seen
    n_examples: int
    clip_norm: float
    noise_multiplier: float
    encoding: str
    shape: tuple[int, int]  # (features, shared vocabulary)
    key_id: str  # which server key sealed it (see keys.key_id)
    suite: str = SUITE_NAME
    compression: str = COMPRESSION

    def to_bytes(self) -> bytes:
        return _canonical({**asdict(self), "shape": list(self.shape)})

    @property
    def dim(self) -> int:
        return (self.shape[0] + 1) * self.shape[1]


@dataclass(frozen=True)
class UpdatePolicy:
    """What the server accepts this round; anything else is refused with a reason."""

    model_fingerprint: str
    shape: tuple[int, int]
    key_id: str
    clip_norm: float = DEFAULT_CLIP_NORM
    noise_multiplier: float = 0.0
    max_examples: int = DEFAULT_MAX_EXAMPLES  # a header claiming more examples is refused
    max_row_share: float = DEFAULT_MAX_ROW_SHARE  # of clip_norm, for one word's row (``validate_rows``)

    def max_file_bytes(self) -> int:
        raw = max(encoded_size(self.shape, e) for e in ENCODINGS)
        # zlib's worst case for incompressible data is a few bytes per 16 KiB block.
        return _PREFIX.size + MAX_HEADER_BYTES + raw + raw // 1000 + 1024 + _IDENTITY_BYTES + _HPKE_OVERHEAD


def new_update_id() -> str:
    return secrets.token_hex(16)


def make_update(dW: np.ndarray, db: np.ndarray, *, public_key: X25519PublicKey | bytes | str | Path,
                model_fingerprint: str, n_examples: int, clip_norm: float = DEFAULT_CLIP_NORM,
                noise_multiplier: float = 0.0, encoding: str = DEFAULT_ENCODING,
                rng: np.random.Generator | None = None, device_key: Ed25519PrivateKey | None = None) -> bytes:
    """Clip, noise, encode, compress, sign with ``device_key`` (if any) and seal a shared-head delta.

    It seals the arrays it is given: ``(dW, db)`` must already exclude
    personal-word slots (see ``shared_delta``), and ``n_examples`` is taken on
    trust. ``edgekit.federated.export_update`` does both for a model. Without
    ``device_key`` the update is anonymous: a round that requires enrolled
    devices refuses it. Returns the file bytes.
    """
    public_key = load_public_key(public_key)
    dW, db = privatize(dW, db, clip_norm, noise_multiplier, rng)
    header = UpdateHeader(model_fingerprint=model_fingerprint, update_id=new_update_id(),
                          n_examples=int(n_examples), clip_norm=float(clip_norm),
                          noise_multiplier=float(noise_multiplier), encoding=encoding,
                          shape=(int(dW.shape[0]), int(dW.shape[1])), key_id=key_id(public_key))
    _check_header(header)
    limit = norm_bound(clip_norm, noise_multiplier, header.dim)
    return seal(header, pack_payload(dW, db, encoding, limit), public_key, device_key)


def pack_payload(dW: np.ndarray, db: np.ndarray, encoding: str = DEFAULT_ENCODING,
                 max_norm: float | None = None) -> bytes:
    """Encoded and compressed delta: the plaintext that ``seal`` encrypts. It does not clip."""
    return zlib.compress(encode_delta(dW, db, encoding, max_norm), 6)


def seal(header: UpdateHeader, payload: bytes, public_key: X25519PublicKey,
         device_key: Ed25519PrivateKey | None = None) -> bytes:
    """Update file bytes: the header in clear, bound as HPKE ``info`` to the sealed payload.

    With ``device_key``, the plaintext starts with the device's public key and
    its signature over the header and the payload (module docstring).
    Nothing is checked: the header's clip norm is a claim about the payload
    that only ``make_update`` makes true (the server refuses a payload over it).
    """
    prefix = _prefix(header.to_bytes())
    if device_key is None:
        identity = bytes([_ANONYMOUS])
    else:
        signature = device_key.sign(SIGNATURE_DOMAIN + prefix + payload)
        identity = bytes([_ED25519]) + _raw(device_key.public_key()) + signature
    return prefix + SUITE.encrypt(identity + payload, public_key, info=prefix)


def parse_update(data: bytes) -> tuple[UpdateHeader, bytes, bytes]:
    """Split update bytes into ``(header, info, sealed)``; only ``UpdateError`` escapes.

    Nothing is authenticated yet: the header is trustworthy only once
    ``open_update`` has decrypted the payload under it.
    """
    header = parse_header(data, _HPKE_OVERHEAD)
    end = _PREFIX.size + _PREFIX.unpack_from(data)[2]
    return header, data[:end], data[end:]


def parse_header(data: bytes, trailing: int = 0) -> UpdateHeader:
    """The header of update bytes that hold at least the prefix, the header and ``trailing`` more bytes.

    With ``trailing=0``, enough to see what an update claims (for the
    round's median of example counts) from a file's first
    ``HEADER_PREFIX_BYTES``; nothing is authenticated.
    """
    if len(data) < _PREFIX.size:
        raise UpdateError("format", f"truncated: {len(data)} bytes, not even a header")
    magic, version, hlen = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise UpdateError("format", "not an edgekit update file (bad magic bytes)")
    if version not in READ_VERSIONS:
        raise UpdateError("version", f"update format v{version}; this edgekit reads "
                          f"v{READ_VERSIONS[0]} to v{READ_VERSIONS[-1]}")
    if hlen > MAX_HEADER_BYTES:
        raise UpdateError("format", f"header length {hlen} exceeds {MAX_HEADER_BYTES} bytes")
    end = _PREFIX.size + hlen
    if len(data) < end + trailing:
        raise UpdateError("format", f"truncated: {len(data)} bytes, header alone needs {end + trailing}")
    return _parse_header(data[_PREFIX.size:_PREFIX.size + hlen])


def check_header(header: UpdateHeader, policy: UpdatePolicy) -> None:
    """Refuse an update this round cannot use, before decrypting anything."""
    if header.model_fingerprint != policy.model_fingerprint:
        raise UpdateError("wrong-model", f"update is for model {header.model_fingerprint}, "
                          f"this round aggregates {policy.model_fingerprint}")
    if header.key_id != policy.key_id:
        raise UpdateError("wrong-key", f"update is sealed for server key {header.key_id}, "
                          f"this server's key is {policy.key_id}")
    if tuple(header.shape) != tuple(policy.shape):
        raise UpdateError("wrong-shape", f"delta shape {header.shape}, the model's shared head is {policy.shape}")
    for name in ("clip_norm", "noise_multiplier"):
        got, want = getattr(header, name), getattr(policy, name)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0):
            raise UpdateError("policy", f"update uses {name.replace('_', ' ')} {got:g}, this round requires {want:g}")
    if header.n_examples > policy.max_examples:
        raise UpdateError("too-many-examples", f"update claims {header.n_examples:,} examples, more than the "
                          f"{policy.max_examples:,} one update may carry this round")


def open_update(data: bytes, private_key: X25519PrivateKey, policy: UpdatePolicy,
                seen_ids: Container[str] = ()) -> tuple[UpdateHeader, Delta]:
    """Verify and decrypt one update; return ``(header, (dW, db))`` or raise ``UpdateError``.

    ``seen_ids`` are ids already aggregated (this batch and earlier rounds): the
    caller adds an id once it accepts the update. A device signature, when
    present, must verify; who signed is not checked (``open_signed_update`` does).
    """
    header, delta, _ = open_signed_update(data, private_key, policy, seen_ids)
    return header, delta


def open_signed_update(data: bytes, private_key: X25519PrivateKey, policy: UpdatePolicy,
                       seen_ids: Container[str] = (), devices: Mapping[str, Ed25519PublicKey] | None = None,
                       seen_devices: Container[str] = ()) -> tuple[UpdateHeader, Delta, str | None]:
    """``open_update``, also returning the id of the device key that signed it (``None``: unsigned).

    With ``devices`` (enrolled keys by ``verify_key_id``), only an update
    signed by one of them is accepted: v1 files (``old-format``), unsigned
    ones (``unsigned``) and keys not enrolled (``unenrolled``) are refused,
    and so is a device in ``seen_devices`` (``duplicate-device``: the caller
    adds a device once it accepts its update). A signature that does not
    verify is refused in any case (``bad-signature``).
    """
    if len(data) > policy.max_file_bytes():
        raise UpdateError("too-large", f"{len(data)} bytes, more than a {policy.shape} delta can take")
    header, info, sealed = parse_update(data)
    check_header(header, policy)
    if header.update_id in seen_ids:
        raise UpdateError("replay", f"update id {header.update_id} was already aggregated")
    version = _PREFIX.unpack_from(info)[1]
    if devices is not None and version < 2:
        raise UpdateError("old-format", f"update format v{version} carries no device signature; this round accepts "
                          "only updates signed by enrolled devices (update edgekit on the device)")
    try:
        plaintext = SUITE.decrypt(sealed, private_key, info=info)
    except InvalidTag:
        raise UpdateError("decrypt", "decryption failed: the file was modified, cut short, or sealed for another "
                          "key") from None
    signer, payload = (None, plaintext) if version < 2 else _verify_identity(plaintext, info)
    device = None if signer is None else verify_key_id(signer)
    if devices is not None:
        _check_enrolled(signer, devices, seen_devices)
    raw = _decompress(payload, encoded_size(header.shape, header.encoding))
    dW, db = decode_delta(raw, header.shape, header.encoding)
    validate_delta(dW, db, clip_norm=header.clip_norm, noise_multiplier=header.noise_multiplier)
    validate_rows(dW, db, clip_norm=header.clip_norm, noise_multiplier=header.noise_multiplier,
                  max_row_share=policy.max_row_share)
    return header, (dW, db), device


def _verify_identity(plaintext: bytes, info: bytes) -> tuple[Ed25519PublicKey | None, bytes]:
    """Split a v2 plaintext into ``(device public key or None, payload)``; the signature must verify."""
    if not plaintext or plaintext[0] not in (_ANONYMOUS, _ED25519):
        raise UpdateError("payload", "the payload's identity block is malformed")
    if plaintext[0] == _ANONYMOUS:
        return None, plaintext[1:]
    if len(plaintext) < _IDENTITY_BYTES:
        raise UpdateError("payload", "the payload's identity block is truncated")
    try:
        public = Ed25519PublicKey.from_public_bytes(plaintext[1:33])
    except ValueError:
        raise UpdateError("payload", "the payload's device key is not an Ed25519 key") from None
    payload = plaintext[_IDENTITY_BYTES:]
    try:
        public.verify(plaintext[33:_IDENTITY_BYTES], SIGNATURE_DOMAIN + info + payload)
    except InvalidSignature:
        raise UpdateError("bad-signature", f"the device signature (key {verify_key_id(public)}) does not match "
                          "the update: forged, or changed after the device signed it") from None
    return public, payload


def _check_enrolled(signer: Ed25519PublicKey | None, devices: Mapping[str, Ed25519PublicKey],
                    seen_devices: Container[str]) -> None:
    """The whole key must match the enrolled one: a key id is 64 bits, too short to stand for a key."""
    if signer is None:
        raise UpdateError("unsigned", "the update is not signed by a device key; this round accepts only "
                          "updates signed by enrolled devices")
    device = verify_key_id(signer)
    enrolled = devices.get(device)
    if enrolled is None or _raw(enrolled) != _raw(signer):
        raise UpdateError("unenrolled", f"signed by device key {device}, which is not enrolled in this round's "
                          "registry (`edgekit enroll DEVICE.pub --registry FILE`)")
    if device in seen_devices:
        raise UpdateError("duplicate-device", f"device {device} already has an update in this round; "
                          "one update per device per round is counted")


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _decompress(payload: bytes, expected: int) -> bytes:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(payload, expected + 1)
    except zlib.error as e:
        raise UpdateError("payload", f"payload does not decompress ({e})") from None
    if len(raw) != expected or not d.eof or d.unused_data:
        raise UpdateError("payload", f"payload decompresses to {len(raw)}{'+' if not d.eof else ''} bytes, "
                          f"{expected} expected")
    return raw


def _prefix(header_bytes: bytes) -> bytes:
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


_FIELDS = {"model_fingerprint", "update_id", "n_examples", "clip_norm", "noise_multiplier",
           "encoding", "shape", "key_id", "suite", "compression"}


def _parse_header(raw: bytes) -> UpdateHeader:
    try:
        obj = json.loads(raw.decode("ascii"))
        canonical = isinstance(obj, dict) and _canonical(obj) == raw
    except (ValueError, RecursionError):
        raise UpdateError("format", "header is not valid JSON") from None
    if not canonical:
        raise UpdateError("format", "header is not canonical JSON")
    if set(obj) != _FIELDS:
        raise UpdateError("format", f"header fields {sorted(obj)} differ from {sorted(_FIELDS)}")
    shape = obj["shape"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) for s in shape)):
        raise UpdateError("format", f"header shape {shape!r} is not [features, vocabulary]")
    header = UpdateHeader(**{**obj, "shape": (shape[0], shape[1])})
    _check_header(header)
    return header


def _check_header(h: UpdateHeader) -> None:
    checks = [
        (isinstance(h.model_fingerprint, str) and _HEX32.fullmatch(h.model_fingerprint), "model fingerprint"),
        (isinstance(h.update_id, str) and _HEX32.fullmatch(h.update_id), "update id"),
        (isinstance(h.key_id, str) and _HEX16.fullmatch(h.key_id), "key id"),
        (_is_int(h.n_examples) and 1 <= h.n_examples < 2**53, "number of examples"),
        (_is_number(h.clip_norm) and h.clip_norm > 0, "clip norm"),
        (_is_number(h.noise_multiplier) and h.noise_multiplier >= 0, "noise multiplier"),
        (h.encoding in ENCODINGS, "encoding"),
        (all(1 <= s <= MAX_ELEMENTS for s in h.shape) and h.dim <= MAX_ELEMENTS, "shape"),
    ]
    for ok, what in checks:
        if not ok:
            raise UpdateError("format", f"header has an invalid {what}")
    if h.suite != SUITE_NAME or h.compression != COMPRESSION:
        raise UpdateError("version", f"update uses {h.suite!r}/{h.compression!r}; "
                          f"this edgekit reads {SUITE_NAME}/{COMPRESSION}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    """A finite JSON number of sane size (huge ints would overflow float math later)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e300
