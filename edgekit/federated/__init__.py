"""Federated learning of the shared head: encrypted updates and robust aggregation.

Device::

    data = make_update(dW, db, public_key=pub, model_fingerprint=fp, n_examples=n,
                       clip_norm=DEFAULT_CLIP_NORM, noise_multiplier=0.0, encoding="float16")

Server::

    policy = UpdatePolicy(model_fingerprint=fp, shape=(F, V_shared), key_id=key_id(pub))
    result = aggregate_updates(paths, private_key, policy, mode="trimmed-mean")
    install_delta("model.tflite", result.delta, "model-next.tflite")

The pieces (``privatize``, ``encode_delta``, ``validate_delta``, ``Aggregator``,
``add_central_noise``, ``dp_epsilon``) work on plain arrays, for transports
other than update files (Flower).
"""
from __future__ import annotations

from .aggregate import MODES, AggregateResult, Aggregator, Rejection, add_central_noise, aggregate_updates
from .delta import (DEFAULT_CLIP_NORM, ENCODINGS, UpdateError, clip_delta, add_gaussian_noise, decode_delta,
                    delta_norm, encode_delta, norm_bound, privatize, validate_delta)
from .install import apply_delta, install_delta
from .keys import KeyFileError, generate_keypair, key_id, load_private_key, load_public_key
from .privacy import PrivacyReport, dp_epsilon
from .update import (UPDATE_SUFFIX, UpdateHeader, UpdatePolicy, export_update, make_update, open_update,
                     parse_update, shared_delta)

__all__ = [
    "DEFAULT_CLIP_NORM", "ENCODINGS", "MODES", "AggregateResult", "Aggregator", "KeyFileError", "PrivacyReport",
    "Rejection", "UPDATE_SUFFIX", "UpdateError", "UpdateHeader", "UpdatePolicy", "add_central_noise",
    "add_gaussian_noise", "aggregate_updates",
    "apply_delta", "clip_delta", "decode_delta", "delta_norm", "dp_epsilon", "encode_delta", "export_update",
    "generate_keypair", "install_delta", "key_id", "load_private_key", "load_public_key", "make_update",
    "norm_bound", "open_update", "parse_update", "privatize", "shared_delta", "validate_delta",
]
