"""The device's installed model version: what it trusts, what it checks, what it records.

A device installs a new global version only when

1. it is signed by a key the device trusts (``edgekit.signing``); a file the
   user converted locally installs as "unsigned, local" only when asked
   explicitly (``unsigned_local=True``, ``edgekit install --unsigned-local``);
2. it is a version of the installed model: same body, same vocabulary
   (``require_version_of``), so personal state keeps its meaning;
3. it descends from the installed version: the installed fingerprint is in
   its ``lineage`` (the server's chain of parents, signed with the rest).
   The installed version itself, an older one, or a sibling is refused,
   each with its reason, so nobody can roll a device back to a version it
   already left.

In the state folder: ``trusted-keys.pem`` (the servers' verification keys,
PEM, one or more: several during a key rotation), ``models/<fingerprint>.tflite``
(a copy of the installed file, so deleting the download breaks nothing) and
``current-model.json`` (which file is the device's default model from now on).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write_bytes
from .errors import ModelFileError
from .modelfile import ModelFile, require_version_of, write_model_file

# ``edgekit.model`` imports this module to find the installed version at every load; the
# signature checks (``cryptography``, about 8 MB resident) load only when a version is installed.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

CURRENT_NAME = "current-model.json"
MODELS_DIR = "models"
TRUSTED_KEYS = "trusted-keys.pem"
LOCAL = "unsigned, local"
UNSIGNED_LOCAL_FIX = ("if you made it yourself, pass --unsigned-local (Python: unsigned_local=True); "
                      "otherwise install a signed version")


class VersionError(ModelFileError):
    """A version that must not replace the installed one. ``reason``: ``foreign``, ``same``, ``older``, ``sibling``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_descends(current: ModelFile, new: ModelFile, where: str | Path) -> None:
    """Refuse ``new`` unless it is a later version of ``current``'s model (module docstring, 2 and 3)."""
    try:
        require_version_of(current, new, where)
    except ModelFileError as e:
        raise VersionError("foreign", str(e)) from None
    if new.fingerprint == current.fingerprint:
        raise VersionError("same", f"{where}: version {new.fingerprint} is the one installed")
    if new.fingerprint in lineage(current):
        raise VersionError("older", f"{where}: version {new.fingerprint} is older than the installed "
                                    f"{current.fingerprint} (one of its ancestors); a device never goes back")
    if current.fingerprint not in lineage(new):
        parent = new.metadata.get("parent_fingerprint")
        raise VersionError("sibling", f"{where}: version {new.fingerprint} does not descend from the installed "
                                      f"{current.fingerprint} (its parent is {parent}): a sibling or another branch")


def lineage(file: ModelFile) -> list[str]:
    """The version's ancestors, newest first (empty for a converted file, or a malformed field)."""
    chain = file.metadata.get("lineage")
    return [str(f) for f in chain] if isinstance(chain, list) else []


def trusted_keys(state_dir: Path) -> list[Ed25519PublicKey]:
    from .signing import load_verify_keys

    path = state_dir / TRUSTED_KEYS
    return load_verify_keys(path) if path.is_file() else []


def trust_key(state_dir: Path, key_file: str | Path) -> None:
    """Add the keys in ``key_file`` to the device's trusted keys (each kept once)."""
    from .signing import load_verify_keys, public_pem, verify_key_id

    keys = trusted_keys(state_dir)
    known = {verify_key_id(k) for k in keys}
    keys += [k for k in load_verify_keys(key_file) if verify_key_id(k) not in known]
    atomic_write_bytes(state_dir / TRUSTED_KEYS, b"".join(public_pem(k) for k in keys), mode=0o600)


def check_trust(new: ModelFile, where: str | Path, state_dir: Path | None, verify_key: str | Path | None,
                unsigned_local: bool) -> str:
    """How ``new`` is trusted: ``"signed by <key id>"``, or ``LOCAL`` when asked for; else ``SignatureError``.

    The keys: the device's trusted keys plus ``verify_key`` (which
    ``record_install`` adds to them once the version is installed).
    """
    from .signing import SignatureError, is_signed, verify_model

    if unsigned_local:
        return LOCAL
    keys = _keys(state_dir, verify_key)
    if not keys and is_signed(new):  # an unsigned file gets verify_model's "not signed", which no key mends
        raise SignatureError("untrusted-key", f"{where}: this device trusts no server key yet: pass the server's "
                                              "verification key (--verify-key server.signing.pub)")
    return f"signed by {verify_model(new, keys, where)}"


def load_origin(file: ModelFile, where: str | Path, state_dir: Path | None, verify_key: str | Path | None,
                unsigned_local: bool) -> str:
    """The origin of a file named explicitly for loading: ``"bundled"``, ``"signed"`` or ``"local"``; else refused.

    A file's own hashes prove nothing (``edgekit.trust``), so a device runs
    only what something vouches for: the pins of the files edgekit ships, or
    a signature by a key it trusts (``state_dir``'s trusted keys, or
    ``verify_key``). Anything else loads as ``"local"`` only when the caller
    says so (``unsigned_local``): never silently. A signed file whose
    signature fails (tampered, or a foreign key) is refused unless
    ``unsigned_local`` accepts it as unvouched.
    """
    if file.origin == "bundled":
        return "bundled"
    from .signing import SignatureError, is_signed, verify_model

    keys = _keys(state_dir, verify_key)
    if is_signed(file) and keys:
        try:
            verify_model(file, keys, where)
            return "signed"
        except SignatureError:
            if not unsigned_local:  # a tampered or foreign version gets no hint to load it anyway
                raise
    if unsigned_local:
        return "local"
    if is_signed(file):
        raise SignatureError("untrusted-key", f"{where}: signed by a server, but this device trusts no server key yet: "
                                              "pass the server's verification key (verify_key=, CLI: `edgekit "
                                              f"install --verify-key`); or {UNSIGNED_LOCAL_FIX}")
    raise SignatureError("unsigned", f"{where} is an unsigned local model file (not bundled, not signed by a key "
                                     f"this device trusts): {UNSIGNED_LOCAL_FIX}")


def _keys(state_dir: Path | None, verify_key: str | Path | None) -> list[Ed25519PublicKey]:
    """The keys a version may be signed by: the device's trusted keys plus ``verify_key``."""
    from .signing import load_verify_keys

    return (trusted_keys(state_dir) if state_dir is not None else []) + \
        (load_verify_keys(verify_key) if verify_key is not None else [])


def record_install(state_dir: Path, new: ModelFile, trust: str,
                   verify_key: str | Path | None = None) -> Path:
    """Make ``new`` the device's default model (a copy in the state folder); trust ``verify_key`` from now on
    if it verified this version (an install taken as unsigned, local verified nothing).

    Returns the copy's path.
    """
    if verify_key is not None and trust != LOCAL:
        trust_key(state_dir, verify_key)
    models = state_dir / MODELS_DIR
    models.mkdir(parents=True, exist_ok=True)
    target = models / f"{new.fingerprint}.tflite"
    write_model_file(target, new)  # what was verified, not the source again (it may have changed since)
    previous = current_model(state_dir)
    record = {"name": new.metadata["name"], "fingerprint": new.fingerprint, "file": f"{MODELS_DIR}/{target.name}",
              "trust": trust, "lineage": lineage(new)}
    atomic_write_bytes(state_dir / CURRENT_NAME, json.dumps(record, indent=1).encode(), mode=0o600)
    if previous is not None and previous != target:
        previous.unlink(missing_ok=True)
    return target


def current_model(state_dir: Path) -> Path | None:
    """The installed version's file, or None when the device still uses the bundled model."""
    record = installed_record(state_dir)
    return None if record is None else state_dir / str(record["file"])


def installed_record(state_dir: Path) -> dict | None:
    """``current-model.json``: name, fingerprint, file, trust, lineage of the installed version (None: none)."""
    path = state_dir / CURRENT_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not re.fullmatch(r"models/[0-9a-f]{32}\.tflite", str(record.get("file"))):
            raise ValueError("no installed file named")
        return record
    except (ValueError, OSError):
        raise ModelFileError(f"{path}: the record of the installed model is corrupt; delete it to go back "
                             "to the bundled model, then install the version again") from None
