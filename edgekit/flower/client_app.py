"""The device side of a Flower federation: personalize on local text, send the head delta.

One round on a device, a ``train`` message of Flower's Message API (``@app.train()``):

1. receive the global head ``[W (F, V), b (V)]`` and its fingerprint;
2. put it on the device's own model file (same body, tokenizer, vocabulary)
   and check that this gives exactly that fingerprint: a device with another
   model refuses rather than send an update that means nothing;
3. train the head on the user's text (the device runtime's LiteRT features
   and numpy head training, see ``train_head_locally``);
4. send the shared-head delta, clipped and optionally noised with the same
   ``privatize`` as ``edgekit export-update``, whether it was within the clip
   bound before clipping (adaptive clipping), the number of examples and the
   personalized top-3 on the user's held-out text.

The user's text never leaves the device; with SecAgg+ (``secaggplus_mod``,
enabled by the server's workflow) neither does the individual delta in the clear.

Where a device finds its model and text (``flower-supernode --node-config``):
``model="/path/model.tflite" text="/path/my-text.txt"``, optionally
``heldout="/path/later-text.txt"``. In simulation the node config only has
``partition-id``; the partition folder (``train.txt``, ``heldout.txt``) is
``<partitions-dir>/client-NNNN``, ``partitions-dir`` and ``model`` coming
from the run config.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

from ..federated.hazmat import delta_norm, privatize, shared_delta
from ..federated.install import with_head
from ..model import EdgeModel
from ..modelfile import read_model_file
from ..personal.train import TrainConfig
from .local import head_scores, train_head_locally
from .partitions import HELDOUT_FILE, TRAIN_FILE, client_folder_name, read_lines
from .settings import ARRAYS, CONFIG, INFO_KEY, METRICS

HELDOUT_TARGETS = 1000  # caps the device's held-out evaluation so a round stays ~1 s per device
_CACHE_SIZE = 2  # global versions kept per process: this round's, and the last one
LEGACY_FIT = "fitins.parameters"  # how SecAgg+'s workflow (the older API) lays out a training round


def device_round(paths: tuple[Path, Path, Path | None], head: list[np.ndarray],
                 config: Mapping[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """One device, one round: ``([dW, db, clip indicator], weight, metrics)``. Stateless by design.

    Each round starts from the new global head, so the delta it sends is
    always relative to the version the server names (no drift from stale
    personal state). The device's own personal state (``edgekit
    personalize``) is neither read nor changed. The clip indicator is 1 when
    the delta was within the clip bound before clipping: summed (in the clear
    or under SecAgg+) and noised, it lets the server move the bound toward a
    quantile of the devices' norms without seeing any one norm.
    """
    model_path, text_path, heldout_path = paths
    model = global_model(model_path, (head[0], head[1]), str(config["fingerprint"]))
    local = TrainConfig(epochs=int(config["epochs"]), min_steps=int(config["min-steps"]),
                        learning_rate=float(config["learning-rate"]))
    trained, n_examples = train_head_locally(model, read_lines(text_path), local)
    w0, b0 = model.base_head
    delta = shared_delta(trained[0] - w0, trained[1] - b0, len(model.vocab), model.vocab.personal_slots)
    clip = float(config["clip-norm"])
    within = np.array([1.0 if delta_norm(*delta) <= clip else 0.0], np.float32)
    dW, db = privatize(*delta, clip, float(config["noise-multiplier"]))
    metrics: dict[str, Any] = {"fingerprint": model.fingerprint}
    if heldout_path is not None:  # the user's later text: before and after this round's training
        heldout = read_lines(heldout_path)
        metrics["global-top3"] = head_scores(model, model.base_head, heldout, HELDOUT_TARGETS)["top3"]
        metrics["personal-top3"] = head_scores(model, trained, heldout, HELDOUT_TARGETS)["top3"]
    return [dW, db, within], _weight(n_examples, config), metrics


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


def device_paths(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> tuple[Path, Path, Path | None]:
    """Model, training text and held-out text of this device (see the module docstring).

    A real device's paths come from its own node config only: the server's
    run config must not point a device at other files. Only a simulated node
    (one with a ``partition-id``) takes the model and the partitions folder
    from the run config.
    """
    if "partition-id" in node_config:
        model, folder = run_config.get("model"), run_config.get("partitions-dir")
        if not model or not folder:
            raise ValueError("a simulated device needs 'model' and 'partitions-dir' in the run config")
        part = Path(str(folder)) / client_folder_name(int(node_config["partition-id"]))
        return Path(str(model)), part / TRAIN_FILE, part / HELDOUT_FILE
    model = node_config.get("model")
    if not model:
        raise ValueError("no model: start the SuperNode with --node-config 'model=\"/path/model.tflite\"'")
    if not node_config.get("text"):
        raise ValueError("no text: start the SuperNode with --node-config 'text=\"/path/my-text.txt\"'")
    heldout = node_config.get("heldout")
    return Path(str(model)), Path(str(node_config["text"])), Path(str(heldout)) if heldout else None


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


app = ClientApp(mods=[secagg_when_asked])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """A training round, in the Message API's records or, inside SecAgg+, in the older fit layout."""
    paths = device_paths(context.node_config, context.run_config)
    if LEGACY_FIT in msg.content.array_records:  # SecAggPlusWorkflow's last stage: FitIns in, FitRes out
        fitins = recorddict_to_fitins(msg.content, keep_input=False)
        arrays, weight, metrics = device_round(paths, parameters_to_ndarrays(fitins.parameters), fitins.config)
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), weight, metrics)
        return Message(fitres_to_recorddict(res, keep_input=False), reply_to=msg)
    config = dict(msg.content[CONFIG])
    arrays, weight, metrics = device_round(paths, msg.content[ARRAYS].to_numpy_ndarrays(), config)
    fingerprint = metrics.pop("fingerprint")
    content = RecordDict({ARRAYS: ArrayRecord(arrays), METRICS: MetricRecord({"num-examples": weight, **metrics}),
                          INFO_KEY: ConfigRecord({"fingerprint": fingerprint})})
    return Message(content, reply_to=msg)
