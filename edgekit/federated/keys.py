"""The server's keys: the HPKE pair (RFC 9180: X25519, HKDF-SHA256, ChaCha20-Poly1305) and the
Ed25519 model-signing pair (``edgekit.signing``); a device's Ed25519 identity key and the
server's registry of enrolled device keys.

Devices only ever hold the public keys: one lets them seal an update that only
the server can open, the other verifies the model versions the server signs.
The private keys never leave the server; they are written with 0600
permissions and, when a passphrase is given, encrypted at rest (PKCS#8 with
the best encryption ``cryptography`` offers).

A device's identity key is made on the device, in its state folder, the
first time it is needed; it signs each update inside the sealed payload
(``hazmat.update``), so only the server learns which device sent it. The
server keeps the public halves it has enrolled in a registry, a plain PEM
file of Ed25519 public keys (``enroll_device`` appends one; deleting a
block revokes it), and counts one update per enrolled key per round.

The suite is fixed rather than configurable: one well-reviewed choice leaves
nothing to negotiate and nothing to downgrade. ChaCha20-Poly1305 is fast in
software on phones without AES instructions.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from .. import signing
from ..atomic import atomic_write_bytes
from ..errors import KeyFileError

SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
SUITE_NAME = "X25519-HKDF-SHA256-ChaCha20Poly1305"
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
PASSPHRASE_ENV = "EDGEKIT_KEY_PASSPHRASE"


def generate_keypair(private_path: str | Path, public_path: str | Path | None = None, *,
                     passphrase: bytes | None = None, overwrite: bool = False) -> X25519PublicKey:
    """Create the server key pair and write both halves; return the public key.

    ``public_path`` defaults to ``<private_path>.pub``. An existing private key
    is never replaced unless ``overwrite=True``: losing it makes every update
    sealed to it unreadable.
    """
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path is not None else private_path.with_name(private_path.name + ".pub")
    key = X25519PrivateKey.generate()
    _write_pair(key, private_path, public_pem(key.public_key()), public_path, passphrase, overwrite,
                "updates sealed to it would become unreadable")
    return key.public_key()


def signing_key_paths(private_path: str | Path) -> tuple[Path, Path]:
    """Where ``edgekit keygen -o server.key`` puts the signing pair: ``server.signing.key``, ``server.signing.pub``."""
    p = Path(private_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.signing.key"), p.with_name(f"{stem}.signing.pub")


def generate_signing_key(private_path: str | Path, public_path: str | Path, *, passphrase: bytes | None = None,
                         overwrite: bool = False) -> Ed25519PublicKey:
    """Create the server's Ed25519 model-signing key (0600, passphrase as for the HPKE key) and its public half.

    Devices get the public half (the verification key) and install only
    versions it verifies. Replacing the key needs a rotation (README).
    """
    key = Ed25519PrivateKey.generate()
    _write_pair(key, Path(private_path), signing.public_pem(key.public_key()), Path(public_path), passphrase,
                overwrite, "devices that trust it would refuse versions signed by a new one")
    return key.public_key()


DEVICE_KEY_NAME, DEVICE_PUBLIC_NAME = "device.key", "device.pub"
DEVICE_KEY_HINT = "a device's Ed25519 identity key (the device.pub of `edgekit device-key`)"
REGISTRY_HINT = "a registry of enrolled device keys (PEM blocks written by `edgekit enroll`)"


def device_key_paths(state_dir: str | Path) -> tuple[Path, Path]:
    """Where a device keeps its identity key: ``device.key`` (0600) and ``device.pub`` in its state folder."""
    return Path(state_dir) / DEVICE_KEY_NAME, Path(state_dir) / DEVICE_PUBLIC_NAME


def device_key(state_dir: str | Path, *, create: bool = True) -> tuple[Ed25519PrivateKey, bool]:
    """The device's identity key from its state folder, made there on first use; ``(key, made_now)``.

    Written like the server's keys (0600, atomically, the public half 0644
    beside it) and without a passphrase: a keyboard exports unattended. The
    key stays on the device; the operator enrolls ``device.pub``. Losing it
    means enrolling the device again. ``create=False`` raises ``KeyFileError``
    when there is none.
    """
    private, public = device_key_paths(state_dir)
    if not private.exists():
        if not create:
            raise KeyFileError(f"{private}: no device key yet; make one with `edgekit device-key`")
        private.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        _write_pair(key, private, signing.public_pem(key.public_key()), public, None, False,
                    "the server knows this device by it")
        return key, True
    loaded = _load_private(private, None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyFileError(f"{private}: {signing.key_kind(loaded)}, expected the device's Ed25519 identity key; "
                           "move it away and run `edgekit device-key` (then enroll the new device.pub)")
    if not public.exists():  # deleted by hand: the public half is derived from the private one
        atomic_write_bytes(public, signing.public_pem(loaded.public_key()), mode=PUBLIC_MODE)
    return loaded, False


def load_registry(path: str | Path) -> dict[str, Ed25519PublicKey]:
    """The enrolled device keys of a registry file, by key id (``signing.verify_key_id``)."""
    return {signing.verify_key_id(k): k for k in signing.load_verify_keys(Path(path), REGISTRY_HINT)}


def enroll_device(public_key: str | Path | bytes, registry: str | Path) -> tuple[str, bool]:
    """Add one device's public key to the registry file (made if missing); return ``(key id, added)``.

    A key already enrolled is left as it is (``added`` False). The registry
    is rewritten atomically, so a reader never sees half a key.
    """
    keys = signing.load_verify_keys(public_key, DEVICE_KEY_HINT)
    where = "key" if isinstance(public_key, bytes) else str(public_key)
    if len(keys) != 1:
        raise KeyFileError(f"{where}: holds {len(keys)} keys; enroll one device (one device.pub) at a time")
    kid = signing.verify_key_id(keys[0])
    registry = Path(registry)
    existing = registry.read_bytes() if registry.exists() else b""
    if existing.strip() and kid in load_registry(registry):
        return kid, False
    separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
    atomic_write_bytes(registry, existing + separator + signing.public_pem(keys[0]), mode=PUBLIC_MODE)
    return kid, True


def _write_pair(key: X25519PrivateKey | Ed25519PrivateKey, private_path: Path, public: bytes, public_path: Path,
                passphrase: bytes | None, overwrite: bool, loss: str) -> None:
    if not overwrite and private_path.exists():
        raise KeyFileError(f"{private_path}: already exists; refusing to replace a key ({loss})")
    if passphrase is not None and not passphrase:
        raise KeyFileError("empty passphrase: give a real one, or none for an unencrypted key")
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase is not None
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    atomic_write_bytes(private_path, pem, mode=PRIVATE_MODE)
    atomic_write_bytes(public_path, public, mode=PUBLIC_MODE)


def public_pem(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public_key: X25519PublicKey) -> str:
    """Short public id of a key, written in update headers.

    It lets the server say "sealed for another key" instead of a bare
    decryption failure; it reveals nothing the public key does not.
    """
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(source: str | Path | bytes | X25519PublicKey) -> X25519PublicKey:
    """A public key from a PEM file path, PEM bytes, or a key object."""
    if isinstance(source, X25519PublicKey):
        return source
    data, where = _read(source)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError(f"{where}: not a PEM public key") from None
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(f"{where}: {signing.key_kind(key)}, expected an X25519 public key "
                           "(make one with `edgekit keygen`)")
    return key


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> X25519PrivateKey:
    """The server's private key; refuses a file that others can read."""
    key = _load_private(Path(path), passphrase)
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path}: {signing.key_kind(key)}, expected an X25519 private key")
    return key


def load_signing_key(path: str | Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """The server's model-signing key (``<name>.signing.key``); refuses a file that others can read."""
    key = _load_private(Path(path), passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: {signing.key_kind(key)}, expected the Ed25519 signing key "
                           "(the .signing.key file from `edgekit keygen`)")
    return key


def read_passphrase(path: str | Path | None = None) -> bytes | None:
    """The private keys' passphrase: from ``path`` (one line), else ``$EDGEKIT_KEY_PASSPHRASE``, else ``None``.

    A server that runs unattended (the Flower ServerApp) has no prompt; an
    empty passphrase is an error, never "no passphrase".
    """
    if path:
        try:
            secret = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read passphrase ({e.strerror})") from None
    elif PASSPHRASE_ENV in os.environ:
        secret = os.environ[PASSPHRASE_ENV].encode()
    else:
        return None
    if not secret:
        raise KeyFileError("the key passphrase is empty")
    return secret


def _load_private(path: Path, passphrase: bytes | None) -> object:
    data, where = _read(path)
    _check_private_mode(path)
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        # cryptography raises TypeError for a missing or unexpected password.
        hint = "it is passphrase-protected: give the passphrase" if passphrase is None else "it has no passphrase"
        raise KeyFileError(f"{where}: {hint}") from None
    except ValueError:
        raise KeyFileError(f"{where}: not a PEM private key, or the passphrase is wrong") from None


def _read(source: str | Path | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "key"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key ({e.strerror})") from None


def _check_private_mode(path: Path) -> None:
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path}: private key is readable by others (mode {mode:o}); "
                           f"run: chmod 600 {path}")
