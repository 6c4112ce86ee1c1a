"""The device's recipe: seal what a model learned as one update file for the server.

A recipe, not a primitive: it takes only the shared rows (personal-word
slots are personal data), always clips, seals to the server's key, and
consumes the contribution so the same text never counts twice. The model is
duck-typed (``Contributor``): this package sits above ``edgekit.model`` and
never imports it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from ..atomic import atomic_write_bytes
from .hazmat.delta import DEFAULT_CLIP_NORM, DEFAULT_ENCODING, shared_delta
from .hazmat.update import DEFAULT_MAX_EXAMPLES, make_update


class Contributor(Protocol):
    """What ``export_update`` needs of a model (``EdgeModel`` has it)."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def n_examples(self) -> int: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...

    def head_delta(self) -> tuple[np.ndarray, np.ndarray]: ...

    def consume_contribution(self) -> None: ...


def export_update(model: Contributor, server_public_key: X25519PublicKey | bytes | str | Path,
                  path: str | Path | None = None, *, clip_norm: float = DEFAULT_CLIP_NORM,
                  noise_multiplier: float = 0.0, encoding: str = DEFAULT_ENCODING,
                  device_key: Ed25519PrivateKey | None = None) -> bytes:
    """Seal the model's head delta for the server, clipped to ``clip_norm``; write it to ``path`` if given.

    ``server_public_key``: a key object, PEM bytes, or the path of the
    server's ``.pub`` file. ``noise_multiplier`` > 0 adds local DP noise
    (std ``noise_multiplier * clip_norm`` per coordinate); ``encoding`` is
    ``float16`` or ``int8`` (``ENCODINGS``). The round's server must require
    the same ``clip_norm`` and ``noise_multiplier``, or it refuses the update.

    ``device_key``: the device's identity key (``keys.device_key(state_dir)``;
    ``edgekit export-update`` always passes it). It signs the update inside
    the sealed payload, so a server with a registry of enrolled devices
    counts this device once per round; without it the update is anonymous,
    and such a server refuses it.

    The update claims at most ``DEFAULT_MAX_EXAMPLES`` examples: a server
    refuses a larger claim (one device must not outweigh a round).

    Then ``model.consume_contribution()``: an update carries what was learned
    since the previous export (or the model install), so the server, which
    counts each update on its own, never counts the same text twice. An update that
    is never delivered is lost to the federation (the device keeps its
    personalization). With nothing learned since, it raises ``ValueError``.
    Returns the update's bytes.
    """
    if model.n_examples < 1:
        raise ValueError("nothing to export: nothing learned since the previous export "
                         "or since this model version was installed")
    meta = model.metadata
    dW, db = shared_delta(*model.head_delta(), meta["vocab_size"], meta.get("personal_slots", 0))
    data = make_update(dW, db, public_key=server_public_key, model_fingerprint=model.fingerprint,
                       n_examples=min(model.n_examples, DEFAULT_MAX_EXAMPLES), clip_norm=clip_norm,
                       noise_multiplier=noise_multiplier, encoding=encoding, device_key=device_key)
    if path is not None:
        atomic_write_bytes(path, data, mode=0o600)  # the header names the model version; only its owner reads it
    model.consume_contribution()
    return data
