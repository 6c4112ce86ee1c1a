"""The device side of a Flower federation: personalize on local text, send the head delta.

One round on a device, in Flower's terms a ``fit``:

1. receive the global head ``[W (F, V), b (V)]`` and its fingerprint;
2. put it on the device's own model file (same body, tokenizer, vocabulary)
   and check that this gives exactly that fingerprint: a device with another
   model refuses rather than send an update that means nothing;
3. train the head on the user's text (the device runtime's LiteRT features
   and numpy head training, see ``train_head_locally``);
4. send the shared-head delta, clipped and optionally noised with the same
   ``privatize`` as ``edgekit export-update``, plus the number of examples
   and the personalized top-3 on the user's held-out text.

The user's text never leaves the device; with SecAgg+ (``secaggplus_mod``,
enabled by the server's workflow) neither does the individual delta in the clear.

Where a device finds its model and text (``flower-supernode --node-config``):
``model="/path/model.tflite" text="/path/my-text.txt"``, optionally
``heldout="/path/later-text.txt"``. In simulation the node config only has
``partition-id``; the partition folder (``train.txt``, ``heldout.txt``) is
``<partitions-dir>/client-NNNN``.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Scalar
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from ..federated.hazmat import privatize, shared_delta
from ..federated.install import with_head
from ..model import EdgeModel
from ..modelfile import read_model_file
from ..personal.train import TrainConfig
from .local import head_scores, train_head_locally
from .partitions import HELDOUT_FILE, TRAIN_FILE, client_folder_name, read_lines

HELDOUT_TARGETS = 1000  # caps the device's held-out evaluation so a round stays ~1 s per device
_CACHE_SIZE = 2  # global versions kept per process: this round's, and the last one


class EdgeClient(NumPyClient):
    """One device: its model file and its text. Stateless between rounds by design.

    Each round starts from the new global head, so the delta it sends is
    always relative to the version the server names (no drift from stale
    personal state). The device's own personal state (``edgekit
    personalize``) is neither read nor changed.
    """

    def __init__(self, model_path: Path, text_path: Path, heldout_path: Path | None = None) -> None:
        self.model_path = model_path
        self.text_path = text_path
        self.heldout_path = heldout_path

    def fit(self, parameters: list[np.ndarray], config: Mapping[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        model = global_model(self.model_path, (parameters[0], parameters[1]), str(config["fingerprint"]))
        local = TrainConfig(epochs=int(config["epochs"]), min_steps=int(config["min-steps"]),
                            learning_rate=float(config["learning-rate"]))
        head, n_examples = train_head_locally(model, read_lines(self.text_path), local)
        w0, b0 = model.base_head
        delta = shared_delta(head[0] - w0, head[1] - b0, len(model.vocab), model.vocab.personal_slots)
        dW, db = privatize(*delta, float(config["clip-norm"]), float(config["noise-multiplier"]))
        metrics: dict[str, Scalar] = {"fingerprint": model.fingerprint}
        if self.heldout_path is not None:  # the user's later text: before and after this round's training
            heldout = read_lines(self.heldout_path)
            metrics["global-top3"] = head_scores(model, model.base_head, heldout, HELDOUT_TARGETS)["top3"]
            metrics["personal-top3"] = head_scores(model, head, heldout, HELDOUT_TARGETS)["top3"]
        return [dW, db], _weight(n_examples, config), metrics


def _weight(n_examples: int, config: Mapping[str, Any]) -> int:
    """What this update counts for in the average; 0 means "learned nothing, ignore me".

    The device caps its own weight: under SecAgg+ the server cannot.
    """
    if n_examples <= 0:
        return 0
    return 1 if config["uniform-weights"] else min(n_examples, int(config["max-examples"]))


_models: OrderedDict[tuple[str, str], EdgeModel] = OrderedDict()


def global_model(model_path: Path, head: tuple[np.ndarray, np.ndarray], fingerprint: str) -> EdgeModel:
    """The device's model with the global head installed, cached per process.

    A simulation runs many clients per worker process: they share one
    interpreter per global version instead of loading the model each time.
    """
    key = (str(model_path), fingerprint)
    if key not in _models:
        file = read_model_file(model_path)
        if file.fingerprint != fingerprint:  # the device does not have this version yet
            file = with_head(file, head)
        if file.fingerprint != fingerprint:
            raise ValueError(f"{model_path}: with the global head this model is version {file.fingerprint}, "
                             f"the server's is {fingerprint}: the device has a different base model")
        _models[key] = EdgeModel(file, Path(model_path), state_dir=None)
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
    return _models[key]


def device_paths(node_config: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[Path, Path, Path | None]:
    """Model, training text and held-out text of this device (see the module docstring)."""
    settings = {**defaults, **node_config}
    model = settings.get("model")
    if not model:
        raise ValueError("no model: start the SuperNode with --node-config 'model=\"/path/model.tflite\"'")
    if "text" in settings:
        heldout = settings.get("heldout")
        return Path(model), Path(settings["text"]), Path(heldout) if heldout else None
    if "partition-id" in settings and settings.get("partitions-dir"):
        folder = Path(settings["partitions-dir"]) / client_folder_name(int(settings["partition-id"]))
        return Path(model), folder / TRAIN_FILE, folder / HELDOUT_FILE
    raise ValueError("no text: start the SuperNode with --node-config 'text=\"/path/my-text.txt\"'")


def secagg_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run ``secaggplus_mod`` for SecAgg+ rounds, plain rounds straight through.

    Flower's mod expects every training message to be a SecAgg+ stage. A
    device started with ``secure-only=true`` refuses plain rounds, so a
    server cannot quietly switch SecAgg+ off and read its delta.
    """
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    if context.node_config.get("secure-only") and msg.metadata.message_type == MessageType.TRAIN:
        raise PermissionError("this device only takes part in SecAgg+ rounds (secure-only=true)")
    return call_next(msg, context)


def make_client_app(defaults: Mapping[str, Any] | None = None) -> ClientApp:
    """A ClientApp; ``defaults`` (simulation) fill in what the node config does not say."""
    defaults = dict(defaults or {})

    def client_fn(context: Context) -> Client:
        paths = device_paths(context.node_config, defaults)  # device settings never come from the server
        return EdgeClient(*paths).to_client()

    return ClientApp(client_fn=client_fn, mods=[secagg_when_asked])


app = make_client_app()
