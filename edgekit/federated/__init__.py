"""Federated learning of the shared head: sealed device updates, robust aggregation, new versions.

The recipes here are safe to use as they are: they clip, keep personal-word
slots on the device, check every update and refuse what a round cannot use.

Device::

    from edgekit.federated import export_update
    key, _ = device_key(state_dir)  # made on first use; the operator enrolls state_dir/device.pub
    export_update(model, Path("server.key.pub").read_bytes(), "outbox/u1.edgekit-update", device_key=key)

Server::

    policy = UpdatePolicy(model_fingerprint=fp, shape=(F, V_shared), key_id=key_id(public_key))
    enroll_device("device.pub", "devices.pem")  # once per device
    result = aggregate_updates(paths, load_private_key("server.key"), policy,  # trimmed-mean
                               devices=load_registry("devices.pem"))  # one update per enrolled device
    install_delta("model.tflite", result.delta, "model-next.tflite", signing_key=load_signing_key("server.signing.key"))

The primitives they are built from (delta codec, sealing, noise, the
``Aggregator``) are in ``edgekit.federated.hazmat``, for transports other
than update files (Flower): each does one step and trusts its caller for the rest.
"""
from __future__ import annotations

from .aggregate import AggregateResult, Rejection, aggregate_updates
from .export import Contributor, export_update
from .hazmat.aggregator import DEFAULT_MODE, DEFAULT_TRIM, MODES, TOLERATED_FRACTION
from .hazmat.delta import DEFAULT_CLIP_NORM, ENCODINGS, UpdateError
from .hazmat.update import DEFAULT_MAX_EXAMPLES, UPDATE_SUFFIX, UpdatePolicy
from .install import install_delta
from .keys import (
    KeyFileError,
    device_key,
    enroll_device,
    generate_keypair,
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    load_registry,
    load_signing_key,
)
from .privacy import PrivacyReport, dp_epsilon

__all__ = [
    "DEFAULT_CLIP_NORM", "DEFAULT_MAX_EXAMPLES", "DEFAULT_MODE", "DEFAULT_TRIM", "ENCODINGS", "MODES",
    "TOLERATED_FRACTION", "UPDATE_SUFFIX",
    "AggregateResult", "Contributor", "KeyFileError", "PrivacyReport", "Rejection", "UpdateError", "UpdatePolicy",
    "aggregate_updates", "device_key", "dp_epsilon", "enroll_device", "export_update", "generate_keypair",
    "generate_signing_key", "install_delta", "key_id", "load_private_key", "load_public_key", "load_registry",
    "load_signing_key",
]
