"""Bring a Keras model into the edgekit contract, or say exactly why it does not fit.

The contract (docs/design.md): int32 token ids ``[batch, T]`` in, ``(features
[batch, F], logits [batch, V])`` out, the logits made by a Dense layer of
vocabulary size. A user's own model usually has one output, often with a
softmax; it is wrapped here so that the input of its last Dense layer becomes
the feature output and the head emits logits. The device trains that head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import keras
import numpy as np

from edgekit.vocab import Vocabulary


class ContractError(ValueError):
    """The model or vocabulary does not fit the edgekit contract; the message says why."""


def read_vocab(path: str | Path) -> Vocabulary:
    """A ``vocab.txt`` (one token per line, index = id); trailing ``<personal_N>`` are slots."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such vocabulary file")
    try:
        return Vocabulary.load(path)
    except ValueError as e:
        raise ContractError(f"{path}: not an edgekit vocabulary ({e})") from None


def load_keras_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` file (safe mode: no arbitrary code) with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such Keras model file")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for bad files; all mean "cannot load"
        raise ContractError(f"{path}: not a loadable Keras model ({type(e).__name__}: {_first_line(e)})") from None


def contract_model(model: keras.Model, vocab: Vocabulary) -> keras.Model:
    """The model with outputs ``[features, logits]`` and a linear Dense head last.

    Returns ``model`` itself when it already fits; otherwise a wrapper that
    shares its weights (nothing is retrained or copied except a softmax head).
    """
    _check_input(model)
    _check_recurrent_unrolled(model)
    head = _find_head(model, len(vocab))
    features = head.input
    if len(model.outputs) == 2 and _is_linear(head) and model.outputs[0] is features:
        _check_feature_dim(features)
        return model
    logits = head.output
    if not _is_linear(head):
        logits = _linear_copy(head)(features)
    _check_feature_dim(features)
    return keras.Model(model.inputs, [features, logits], name=model.name)


def head_weights(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """Float head ``W [F, V]`` and ``b [V]`` of a contract model (zeros when it has no bias)."""
    head = model.layers[-1]
    kernel = np.asarray(head.kernel.numpy(), dtype=np.float32)
    bias = np.asarray(head.bias.numpy(), dtype=np.float32) if head.use_bias else np.zeros(kernel.shape[1], np.float32)
    return kernel, bias


def body_weights(model: keras.Model) -> list[np.ndarray]:
    """Every float weight except the head's, in the model's own (stable) order."""
    head_ids = {id(w) for w in model.layers[-1].weights}
    return [np.asarray(w.numpy(), dtype=np.float32) for w in model.weights if id(w) not in head_ids]


def context_length_of(model: keras.Model) -> int:
    return int(model.inputs[0].shape[1])


def _check_input(model: keras.Model) -> None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a Sequential model saved without an Input
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ContractError("model needs exactly one input with a fixed shape: token ids [batch, context_length]")
    x = inputs[0]
    if len(x.shape) != 2 or not isinstance(x.shape[1], int):
        raise ContractError(f"model input has shape {tuple(x.shape)}, expected (batch, context_length) "
                            "with a fixed context length")
    if "int" not in str(x.dtype):
        raise ContractError(f"model input is {x.dtype}, expected integer token ids (int32)")


def _check_recurrent_unrolled(model: keras.Model) -> None:
    """A rolled LSTM/GRU converts to TensorList ops, which only Flex (not shipped on devices) runs."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.RNN) and not layer.unroll:
            raise ContractError(f"layer {layer.name!r} ({type(layer).__name__}) needs unroll=True: a rolled "
                                "recurrent layer needs Select TF ops (Flex), which device runtimes do not ship")


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _find_head(model: keras.Model, vocab_size: int) -> keras.layers.Dense:
    """The Dense layer producing the last output; it must have one unit per vocabulary entry."""
    layer = model.layers[-1]
    units = getattr(layer, "units", None)
    if not isinstance(layer, keras.layers.Dense) or units != vocab_size:
        what = f"a Dense layer with {units} units" if isinstance(layer, keras.layers.Dense) else \
            f"{type(layer).__name__} {layer.name!r}"
        raise ContractError(f"last layer is {what}, expected a Dense layer with {vocab_size} units "
                            "matching the vocabulary")
    if len(model.outputs) not in (1, 2) or model.outputs[-1] is not layer.output:
        raise ContractError("the last model output must be the output of the last (Dense) layer")
    return layer


def _check_feature_dim(features) -> None:
    if len(features.shape) != 2:
        raise ContractError(f"the head's input has shape {tuple(features.shape)}, expected (batch, features): "
                            "the head must read one feature vector per context")


def _is_linear(layer: keras.layers.Dense) -> bool:
    return layer.activation is keras.activations.linear


def _linear_copy(head: keras.layers.Dense) -> keras.layers.Dense:
    """Same weights without the activation: the device needs logits, not probabilities.

    An int8 softmax output rounds small probabilities to zero, and training
    the head on the device works on logits.
    """
    copy = keras.layers.Dense(head.units, use_bias=head.use_bias, name=f"{head.name}_logits")
    copy.build(head.input.shape)
    copy.set_weights(head.get_weights())
    return copy


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "no details"
