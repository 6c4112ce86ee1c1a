"""Signed model versions: the server signs every version it writes, a device installs only signed ones.

Ed25519 (``cryptography``). The signature is one zip entry of the model
file, ``edgekit.sig`` (JSON: ``algorithm``, ``key_id``, ``signature``), over
a message that binds everything else the file holds::

    b"edgekit-model-signature-v1\\n"
    b"flatbuffer <sha256 of the flatbuffer>\\n"
    b"edgekit.json <sha256 of the metadata as canonical JSON>\\n"
    b"vocab.txt <sha256 of the vocabulary, one token a line>\\n"
    b"head.npz <hash_arrays of the float head override>\\n"     (only when present)
    b"<entry> <sha256 of its bytes>\\n"                         (every other entry, sorted by name)

The message is rebuilt from the parsed parts (not the zip's bytes), so
re-compressing the zip keeps a signature valid while changing any byte a
device reads breaks it. The metadata holds the fingerprint, the parent
chain (``lineage``) and the flatbuffer's SHA-256, so a signed file also
proves which version it is and where it came from.

Signing needs the server's private key (``edgekit.federated.keys``); this
module is at the model-file layer so that a device verifies without the
federated code.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import KeyFileError, ModelFileError
from .modelfile import METADATA_NAME, VOCAB_NAME, ModelFile, complete_metadata, hash_arrays, sha256_hex

SIGNATURE_NAME = "edgekit.sig"
ALGORITHM = "ed25519"
DOMAIN = b"edgekit-model-signature-v1\n"
PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"


class SignatureError(ModelFileError):
    """A model version whose signature is missing, malformed, by an untrusted key, or wrong.

    ``reason`` is a short stable code: ``unsigned``, ``untrusted-key``, ``bad-signature``, ``malformed``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def signed_message(file: ModelFile) -> bytes:
    """What the signature covers: every part of ``file`` except the signature entry (module docstring)."""
    meta = json.dumps(file.metadata, sort_keys=True, separators=(",", ":")).encode()
    parts = [("flatbuffer", sha256_hex(file.flatbuffer)), (METADATA_NAME, sha256_hex(meta)),
             (VOCAB_NAME, sha256_hex("\n".join(file.vocab).encode()))]
    if file.head is not None:
        parts.append(("head.npz", hash_arrays(file.head)))
    parts += [(name, sha256_hex(data)) for name, data in sorted(file.extras.items()) if name != SIGNATURE_NAME]
    return DOMAIN + b"".join(f"{name} {digest}\n".encode() for name, digest in parts)


def verify_key_id(public_key: Ed25519PublicKey) -> str:
    """Short public id of a verification key, written beside each signature."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_model(file: ModelFile, private_key: Ed25519PrivateKey) -> ModelFile:
    """``file`` with its signature entry set (replacing any earlier one); write it with ``write_model_file``.

    The metadata is completed first (checksums, sizes), as the writer will
    write it, so the signature covers the file exactly as written.
    """
    file.metadata = complete_metadata(file)
    record = {"algorithm": ALGORITHM, "key_id": verify_key_id(private_key.public_key()),
              "signature": base64.b64encode(private_key.sign(signed_message(file))).decode()}
    file.extras = {**file.extras, SIGNATURE_NAME: json.dumps(record, sort_keys=True).encode()}
    return file


def is_signed(file: ModelFile) -> bool:
    return SIGNATURE_NAME in file.extras


def verify_model(file: ModelFile, trusted: list[Ed25519PublicKey], where: str | Path = "model") -> str:
    """Check ``file``'s signature against the ``trusted`` keys; return the signing key's id.

    Raises ``SignatureError`` naming why: no signature, a key this device does
    not trust, or a signature that does not match the content (a tampered file).
    """
    if not is_signed(file):
        raise SignatureError("unsigned", f"{where}: not signed; a device installs only versions signed by "
                                         "its server (`edgekit aggregate` signs them)")
    try:
        record = json.loads(file.extras[SIGNATURE_NAME])
        key, signature = str(record["key_id"]), base64.b64decode(record["signature"], validate=True)
        algorithm = record["algorithm"]
    except (ValueError, KeyError, TypeError):
        raise SignatureError("malformed", f"{where}: its signature entry is malformed") from None
    if algorithm != ALGORITHM:
        raise SignatureError("malformed", f"{where}: signed with {algorithm!r}, edgekit verifies {ALGORITHM}")
    matching = [k for k in trusted if verify_key_id(k) == key]
    if not matching:
        known = ", ".join(verify_key_id(k) for k in trusted) or "none"
        raise SignatureError("untrusted-key", f"{where}: signed by key {key}, which this device does not trust "
                                              f"(trusted: {known}); a foreign server's version is refused")
    try:
        matching[0].verify(signature, signed_message(file))
    except InvalidSignature:
        raise SignatureError("bad-signature", f"{where}: the signature does not match the content: the file was "
                                              "changed after it was signed; do not install it") from None
    return key


SERVER_KEY_HINT = "the server's Ed25519 verification key (the .signing.pub file from `edgekit keygen`)"


def load_verify_keys(source: str | Path | bytes, what: str = SERVER_KEY_HINT) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys in a PEM file (or PEM bytes); a trusted-keys file may hold several.

    ``what`` names the expected key in error messages (the server's
    verification key, a device's identity key, a registry of them).
    """
    if isinstance(source, bytes):
        data, where = source, "key"
    else:
        try:
            data, where = Path(source).read_bytes(), str(source)
        except OSError as e:
            raise KeyFileError(f"{source}: cannot read verification key ({e.strerror})") from None
    keys = []
    for block in data.split(PEM_BEGIN)[1:]:
        try:
            key = serialization.load_pem_public_key(PEM_BEGIN + block)
        except ValueError:
            raise KeyFileError(f"{where}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{where}: {key_kind(key)}, expected {what}")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{where}: no PEM public key in it (expected {what})")
    return keys


def key_kind(key: object) -> str:
    """A key's kind in words, for messages: ``X25519PrivateKey`` -> "an X25519 private key"."""
    m = re.fullmatch(r"(\w+?)(Public|Private)Key", type(key).__name__)
    if m is None:
        return f"a {type(key).__name__}"
    article = "an" if m[1][0] in "AEFHILMNORSX" else "a"  # as the letter is said: "an RSA", "a DSA"
    return f"{article} {m[1]} {m[2].lower()} key"


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
