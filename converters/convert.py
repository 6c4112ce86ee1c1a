"""Keras next-word model -> self-contained edgekit ``.tflite`` (flatbuffer + metadata).

Why the checks after conversion: the device finds its inputs, outputs and
head weights by the indices written here, with no TensorFlow to ask. So every
index is found in a real interpreter (ai-edge-litert) and verified: the batch
dimension resizes, the output shapes match, and the head tensor dequantizes
to the Keras head weights.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import keras
import numpy as np

from edgekit.modelfile import ModelFile, hash_arrays, make_fingerprint, write_model_file
from edgekit.tokenizer import Tokenizer, TokenizerConfig
from edgekit.vocab import Vocabulary

from .contract import body_weights, context_length_of, contract_model, head_weights
from .modes import CALIBRATED_MODES, COMPAT_TARGETS, QUANTIZE_MODES

CALIBRATION_SAMPLES = 4000  # contexts; 400 cost version 2 up to 2 points of top-3 (benchmarks/train_base_notes.md)
# Best words ranked inside the interpreter (TOPK_V2, a builtin): the device
# then reads a few candidates instead of sorting the whole vocabulary in
# Python after every space. Enough to fill a suggestion strip; wider requests
# fall back to ranking on the host.
TOP_K = 32
# Ops of the softmax normaliser (sum of exp(logits)) that stay float32 in an
# int8 file: int8 would zero every term below 1/256 of the largest.
_FLOAT_OPS = ["EXP", "SUM"]
# What int8-mixed also keeps float32: the unrolled recurrent cell's gate
# arithmetic and the slicing around it. Its matrix products (FULLY_CONNECTED)
# and the embedding stay int8, so the file keeps int8's size; int8 rounding of
# the gates and the state, compounded over the context, cost up to 2 points of
# top-3 on version 2 (benchmarks/train_base_notes.md).
_GATE_OPS = ["ADD", "SUB", "MUL", "LOGISTIC", "TANH", "SPLIT", "STRIDED_SLICE", "PACK", "UNPACK"]
# Single-input ops between the features layer's matrix product and the head.
_PASS_THROUGH_OPS = {"TANH", "LOGISTIC", "QUANTIZE", "DEQUANTIZE"}
# Dequantized int8 weights differ from float ones by at most half a step;
# this bound (relative to the largest weight) also catches a wrong tensor.
_HEAD_MATCH_TOLERANCE = 0.02


class ConversionError(ValueError):
    """Conversion failed for a reason the user can fix; the message says what."""


@dataclass(frozen=True)
class TensorLayout:
    """Where the device finds things inside the interpreter."""

    tokens_input: int
    features_output: int
    logits_output: int
    top_values_output: int
    top_ids_output: int
    sum_exp_output: int
    head_weight: int
    head_bias: int | None


def convert(model: keras.Model, vocab: Vocabulary, out_path: str | Path, quantize: str = "dynamic",
            calibration_lines: Iterable[str] | None = None, compat: str = "litert", name: str = "edgekit-en",
            tokenizer_config: TokenizerConfig | None = None, progress: bool = False) -> ModelFile:
    """Convert, verify and write ``out_path`` atomically; returns the written model file.

    ``calibration_lines`` (raw text lines) are required for ``int8``: full-integer
    quantization needs activation ranges from representative contexts.
    """
    if quantize not in QUANTIZE_MODES:
        raise ConversionError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZE_MODES)}")
    if compat not in COMPAT_TARGETS:
        raise ConversionError(f"unknown compat target {compat!r}; choose one of {', '.join(COMPAT_TARGETS)}")
    tokenizer_config = tokenizer_config or TokenizerConfig()
    model = contract_model(model, vocab)
    context_length = context_length_of(model)
    weight, bias = head_weights(model)
    calibration = None
    if quantize in CALIBRATED_MODES:
        if calibration_lines is None:
            raise ConversionError(f"{quantize} quantization needs calibration text (--calibration-text)")
        calibration = calibration_contexts(calibration_lines, vocab, context_length, Tokenizer(tokenizer_config))
    words = vocab.word_ids  # specials first and slots last: the graph ranks one slice
    flatbuffer = to_tflite(with_ranking_outputs(model, top_k_width(weight.shape[0], words), words), quantize,
                           compat, calibration, progress=progress)
    layout = locate_tensors(flatbuffer, context_length, weight, bias, words)
    body_sha, head_sha = hash_arrays(body_weights(model)), hash_arrays([weight, bias])
    metadata = {
        "name": name, "quantization": quantize, "compat": compat,
        "context_length": context_length, "feature_dim": int(weight.shape[0]),
        "vocab_size": len(vocab), "personal_slots": vocab.personal_slots,
        "tokenizer": tokenizer_config.to_dict(),
        "inputs": {"tokens": layout.tokens_input},
        "outputs": {"features": layout.features_output, "logits": layout.logits_output,
                    "top_values": layout.top_values_output, "top_ids": layout.top_ids_output,
                    "sum_exp": layout.sum_exp_output},
        "ranked_ids": list(words),
        "head": {"weight_tensor": layout.head_weight, "bias_tensor": layout.head_bias},
        "body_sha256": body_sha, "head_sha256": head_sha,
        "fingerprint": make_fingerprint(body_sha, head_sha, vocab.tokens),
    }
    model_file = ModelFile(flatbuffer=flatbuffer, metadata=metadata, vocab=list(vocab.tokens))
    write_model_file(out_path, model_file)
    return model_file


def top_k_width(feature_dim: int, words: tuple[int, int]) -> int:
    """``TOP_K``, nudged off the feature width: outputs are told apart by width."""
    if words[1] - words[0] <= 2 * TOP_K:
        raise ConversionError(f"a vocabulary of {words[1] - words[0]} words is too small for a next-word model "
                              f"(edgekit needs more than {2 * TOP_K})")
    return TOP_K + 1 if feature_dim == TOP_K else TOP_K


def with_ranking_outputs(model: keras.Model, k: int, words: tuple[int, int]) -> keras.Model:
    """The contract model plus what a suggestion needs, sharing all weights.

    Outputs: features, logits, the ``k`` best words' logits and ids, and the
    softmax normaliser over the words ``sum(exp(logits[start:end]))``
    (unshifted: a trained model's logits are far from float32's exp overflow
    at 88, and the device checks). With the specials and the free slots left
    out in the graph, the device's next-word suggestion is ``top_ids[:k]``
    with probabilities ``exp(top_values[:k]) / sum_exp``: nothing to filter.
    """
    tokens = keras.Input(shape=model.inputs[0].shape[1:], dtype="int32", name="tokens")
    features, logits = model(tokens)
    word_logits = logits[:, words[0]:words[1]]
    values, ids = keras.ops.top_k(word_logits, k)
    sum_exp = keras.ops.sum(keras.ops.exp(word_logits), axis=-1, keepdims=True)
    return keras.Model(tokens, [features, logits, values, ids + words[0], sum_exp], name=model.name)


def calibration_contexts(lines: Iterable[str], vocab: Vocabulary, context_length: int, tokenizer: Tokenizer,
                         samples: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """Up to ``samples`` contexts ``[N, T]`` spread evenly over the start of the text.

    Real contexts (not random ids) matter: activation ranges set from random
    ids clip the values that real sentences produce. Reading stops after
    ``50 * samples`` contexts so a huge text costs bounded memory and time.
    """
    contexts: list[np.ndarray] = []
    for line in tokenizer.iter_lines(lines):
        contexts.extend(vocab.context_ids(line[:i], context_length) for i in range(1, len(line)))
        if len(contexts) >= 50 * samples:
            break
    if not contexts:
        raise ConversionError("calibration text is empty: it has no words to calibrate int8 quantization on")
    pick = np.unique(np.linspace(0, len(contexts) - 1, min(samples, len(contexts))).astype(int))
    return np.stack([contexts[i] for i in pick])


def to_tflite(model: keras.Model, quantize: str, compat: str, calibration: np.ndarray | None = None,
              progress: bool = False) -> bytes:
    """The flatbuffer, TFLite builtins only (device runtimes ship no Flex delegate)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as tmp:
        spec = tf.TensorSpec([None, context_length_of(model)], tf.int32, name="tokens")
        model.export(os.path.join(tmp, "saved"), format="tf_saved_model", input_signature=[spec], verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "saved"))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        _configure_quantization(converter, tf, quantize, compat, calibration, progress)
        try:
            if quantize not in CALIBRATED_MODES:
                return converter.convert()
            if quantize == "int8":  # everything int8 except the normaliser's ops
                return _selective(converter, tf, _FLOAT_OPS, [])
            # int8-mixed: the cell's gate arithmetic float too, then (named only once converted) the
            # features projection, whose int8 rounding the head and personalization would both inherit:
            # two conversions, each calibrated, so each bar says which it is.
            float_ops = _FLOAT_OPS + _GATE_OPS
            _calibrate(converter, calibration, progress, "int8 calibration (1/2, finding the features layer)")
            projection = _features_projection(_selective(converter, tf, float_ops, []))
            _calibrate(converter, calibration, progress, "int8 calibration (2/2)")
            return _selective(converter, tf, float_ops, projection)
        except Exception as e:  # the converter raises ConverterError and plain exceptions alike
            raise _explain_converter_error(e) from None


def _selective(converter, tf, float_ops: list[str], float_nodes: list[str]) -> bytes:
    """Full-integer conversion keeping ``float_ops`` (op names) and ``float_nodes`` (output tensor names) float32."""
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops, denylisted_nodes=float_nodes)
    with warnings.catch_warnings():  # the debugger runs TensorFlow's own interpreter, which warns it is deprecated
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def _features_projection(flatbuffer: bytes) -> list[str]:
    """The output name of the dense layer feeding the head (``[V, F]`` weight), or none if no dense layer does.

    The head is the FULLY_CONNECTED with the most output rows. Walking back from its
    input through the features' activation and (de)quantize ops finds the features
    layer's FULLY_CONNECTED; a model whose recurrent layer feeds the head directly has
    none and keeps only the gates float.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    producer = {out: op for op in ops for out in op["outputs"]}
    head = max((op for op in ops if op["op_name"] == "FULLY_CONNECTED"),
               key=lambda op: tensors[op["inputs"][1]]["shape"][0])
    op = producer.get(head["inputs"][0])
    while op is not None and op["op_name"] in _PASS_THROUGH_OPS:
        op = producer.get(op["inputs"][0])
    return [tensors[op["outputs"][0]]["name"]] if op is not None and op["op_name"] == "FULLY_CONNECTED" else []


def _configure_quantization(converter, tf, quantize: str, compat: str, calibration: np.ndarray | None,
                            progress: bool) -> None:
    if quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in CALIBRATED_MODES:
        # int8 builtins everywhere but the normaliser (_FLOAT_OPS); the int32
        # token input (feeding a gather) and the float32 outputs stay as they are.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        _calibrate(converter, calibration, progress, "int8 calibration")
        # Per-tensor scales. Per-channel dense layers store a float32 scale and an
        # int64 zero point per output row for the head weight and its int32 bias:
        # 240 KB (13% of the file) for a 10k-word head, for no accuracy (measured
        # on the bundled model: top-3 22.50% per-channel, 22.52% per-tensor). The
        # selective quantizer (to_tflite) reads only this general switch; every
        # weighted layer of the model is dense, so it covers exactly those.
        converter._experimental_disable_per_channel = True
    elif compat == "tflite-runtime-2.14" and quantize == "dynamic":
        # Per-channel dense layers need FULLY_CONNECTED v12, which tflite-runtime
        # 2.14 cannot load ("Didn't find op ... version 12").
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True


def _calibrate(converter, calibration: np.ndarray | None, progress: bool, label: str) -> None:
    """Calibrate ``converter`` on ``calibration``, behind a progress bar named ``label`` when ``progress``."""
    converter.representative_dataset = lambda: _representative(calibration, progress, label)


def _representative(calibration: np.ndarray, progress: bool, label: str) -> Iterator[list[np.ndarray]]:
    """One context per step, as the converter's calibration loop expects."""
    if not progress:
        yield from ([row[None, :]] for row in calibration)
        return
    import click  # the bar belongs to the command line; library use stays quiet

    with click.progressbar(calibration, label=label, file=sys.stderr) as rows:
        yield from ([row[None, :]] for row in rows)


def _explain_converter_error(e: Exception) -> ConversionError:
    text = str(e)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if ops or "Select TF" in text or "flex op" in text:
        names = f" ({', '.join(ops)})" if ops else ""
        return ConversionError(f"model needs Select TF ops (Flex){names}, which device runtimes do not ship; "
                               "use layers made of TFLite builtin ops (for LSTM/GRU set unroll=True)")
    lines = [line for line in text.splitlines() if "error:" in line] or text.splitlines()[:1]
    return ConversionError(f"TFLite conversion failed: {lines[0].strip() if lines else type(e).__name__}")


def locate_tensors(flatbuffer: bytes, context_length: int, weight: np.ndarray, bias: np.ndarray,
                   words: tuple[int, int]) -> TensorLayout:
    """Find and verify input, outputs and head tensors in a real interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    inputs = interpreter.get_input_details()
    if len(inputs) != 1 or inputs[0]["dtype"] != np.int32:
        raise ConversionError(f"converted model has inputs {[(d['name'], d['dtype']) for d in inputs]}, "
                              "expected one int32 token input")
    feature_dim, vocab_size = weight.shape
    positions = _output_positions(interpreter, feature_dim, vocab_size, top_k_width(feature_dim, words))
    _check_outputs(interpreter, inputs[0]["index"], context_length, positions, words)
    w_index = _find_weight(interpreter, weight.T)
    b_index = None if not bias.any() else _find_weight(interpreter, bias)
    return TensorLayout(0, *positions, w_index, b_index)


def _output_positions(interpreter, feature_dim: int, vocab_size: int, k: int) -> tuple[int, ...]:
    """Positions in ``get_output_details()`` of features, logits, top values, top ids and sum_exp.

    Told apart by width and type (the ids are the only int32 output).
    """
    kinds = [(int(d["shape_signature"][-1]), np.dtype(d["dtype"]) == np.int32)
             for d in interpreter.get_output_details()]
    wanted = [(feature_dim, False), (vocab_size, False), (k, False), (k, True), (1, False)]
    if len(set(wanted)) < len(wanted) or sorted(kinds) != sorted(wanted):
        raise ConversionError(f"converted model outputs (width, is_int32) are {kinds}, expected {wanted}, "
                              "distinguishable by width and type")
    return tuple(kinds.index(w) for w in wanted)


def _check_outputs(interpreter, index: int, context_length: int, positions: tuple[int, ...],
                   words: tuple[int, int]) -> None:
    """The batch dimension resizes (the device scores batches); top-k and sum_exp agree with the word logits."""
    batch = 3
    contexts = np.random.default_rng(0).integers(0, 5, (batch, context_length), dtype=np.int32)
    try:
        interpreter.resize_tensor_input(index, [batch, context_length])
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, contexts)
        interpreter.invoke()
    except (RuntimeError, ValueError) as e:
        raise ConversionError(f"converted model does not accept a batch of {batch} contexts: {e}") from None
    outs = interpreter.get_output_details()
    _, logits, values, ids, sum_exp = (interpreter.get_tensor(outs[p]["index"]) for p in positions)
    word_logits = logits[:, words[0]:words[1]]
    if len(logits) != batch or not np.all((ids >= words[0]) & (ids < words[1])) \
            or not np.allclose(np.take_along_axis(logits, ids, axis=1), values, atol=1e-4) \
            or not np.all(values[:, :1] >= word_logits.max(axis=1, keepdims=True) - 1e-4):
        raise ConversionError(f"converted model's top-k outputs disagree with its logits for a batch of {batch}")
    if not np.allclose(sum_exp[:, 0], np.exp(word_logits.astype(np.float64)).sum(axis=1), rtol=1e-4):
        raise ConversionError("converted model's softmax normaliser (sum_exp) disagrees with its logits: "
                              "were its EXP/SUM ops quantized?")


def dequantize(interpreter, detail: dict) -> np.ndarray:
    """Float values of a constant tensor: ``(q - zero_point) * scale``, per channel."""
    values = interpreter.get_tensor(detail["index"])
    q = detail["quantization_parameters"]
    if not len(q["scales"]):
        return values.astype(np.float32)
    shape = [1] * values.ndim
    shape[q["quantized_dimension"]] = -1
    return (values.astype(np.float32) - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)


def _find_weight(interpreter, expected: np.ndarray) -> int:
    """Index of the constant tensor holding ``expected`` (head weight ``[V, F]`` or bias ``[V]``).

    Among matches the narrowest dtype wins: a float16 model also holds a
    float32 copy made at run time by DEQUANTIZE, while the device must read
    the stored constant.
    """
    scale = float(np.abs(expected).max()) or 1.0
    matches = []
    for detail in interpreter.get_tensor_details():
        if tuple(detail["shape"]) != expected.shape:
            continue
        try:
            values = dequantize(interpreter, detail)
        except ValueError:  # tensors without data (intermediates) cannot be read
            continue
        with np.errstate(invalid="ignore"):  # unwritten intermediates may hold NaN: never a match
            close = bool(np.all(np.abs(values - expected) <= _HEAD_MATCH_TOLERANCE * scale))
        if close:
            matches.append((np.dtype(detail["dtype"]).itemsize, detail["index"]))
    if not matches:
        what = "weight" if expected.ndim == 2 else "bias"
        raise ConversionError(f"cannot find the head {what} {expected.shape} in the converted model; "
                              "the device could not personalize it")
    return min(matches)[1]
