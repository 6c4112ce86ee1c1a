"""What a model file's parts must hold: ``edgekit.json``'s fields, the vocabulary, the head override.

``read_model_file`` calls these after reading the parts with bounded sizes
and before anything uses them, so a crafted field (``outputs.features = 99``,
``context_length: 0``, a string where a number goes, a head of NaNs) is one
``ModelFileError`` naming the field, never a ``TypeError`` or ``KeyError``
somewhere later, an infinite loop, or NaN suggestions. The cross-check
against the flatbuffer's graph (``check_graph``) makes sure the indices the
runtime reads (``inputs``, ``outputs``, ``head``) name tensors of the shapes
and types it expects.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .errors import ModelFileError
from .flatbuffer_check import Graph
from .tokenizer import SPECIAL_TOKENS, TokenizerConfig
from .vocab import PERSONAL_PREFIX, personal_slot_name

MAX_CONTEXT = 512  # tokens of context
MAX_FEATURES = 8192
MAX_VOCAB = 1 << 20
MAX_TOKEN_CHARS = 256  # one vocabulary entry
MAX_ABS_HEAD = 1e4  # a head override's weights; trained heads stay within a few units
_HEX32, _HEX64 = re.compile(r"[0-9a-f]{32}"), re.compile(r"[0-9a-f]{64}")
OUTPUT_NAMES = ("features", "logits", "top_values", "top_ids", "sum_exp")


def check_metadata(meta: Any) -> None:
    """Types and ranges of ``edgekit.json``: the fields every reader needs, and any other field present.

    A server that installs a head reads only these; a device that runs the
    file also needs the runtime's fields (``check_runnable``).
    """
    _want(isinstance(meta, dict), "edgekit.json is not a JSON object")
    _text(meta, "name", 128)
    _int(meta, "feature_dim", 1, MAX_FEATURES)
    vocab = _int(meta, "vocab_size", 1, MAX_VOCAB)
    _int(meta, "personal_slots", 0, vocab - 1)
    _int(meta, "tflite_bytes", 8, 1 << 31)
    for key, pattern in (("body_sha256", _HEX64), ("head_sha256", _HEX64), ("tflite_sha256", _HEX64),
                         ("fingerprint", _HEX32)):
        _want(isinstance(meta.get(key), str) and pattern.fullmatch(meta[key]), f"{key} is not a hex digest")
    if meta.get("parent_fingerprint") is not None:
        _want(isinstance(meta["parent_fingerprint"], str) and _HEX32.fullmatch(meta["parent_fingerprint"]),
              "parent_fingerprint is not a hex digest")
    for key, check in _RUNTIME_FIELDS.items():
        if key in meta:
            check(meta)


def check_runnable(meta: dict, vocab: list[str]) -> None:
    """What a device needs besides: every runtime field present, specials first, personal slots last."""
    missing = [k for k in REQUIRED_TO_RUN if k not in meta]
    _want(not missing, f"edgekit.json lacks {', '.join(missing)} (not a file the device can run)")
    _want(meta["vocab_size"] > len(SPECIAL_TOKENS) + meta["personal_slots"], "vocabulary has no words")
    _want(tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS,
          f"vocabulary does not start with {' '.join(SPECIAL_TOKENS)}")
    n, slots = len(vocab), meta["personal_slots"]
    _want(vocab[n - slots:] == [personal_slot_name(i) for i in range(slots)]
          and not any(t.startswith(PERSONAL_PREFIX) for t in vocab[: n - slots]),
          f"vocabulary does not end in its {slots} personal slots")


def check_vocab(data: bytes, meta: dict) -> list[str]:
    """The vocabulary's tokens, checked against the metadata before a line is split off.

    Lines are counted first: a vocabulary of a million newlines is refused
    by its count, without making a million strings.
    """
    n = meta["vocab_size"]
    _want(data.count(b"\n") == n and data.endswith(b"\n"), f"vocabulary does not have {n} lines")
    try:
        tokens = data.decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError:
        raise ModelFileError("vocabulary is not UTF-8 text") from None
    _want(all(0 < len(t) <= MAX_TOKEN_CHARS and not any(c.isspace() for c in t) for t in tokens),
          "a vocabulary entry is empty, too long, or has a space in it")
    _want(len(set(tokens)) == n, "vocabulary has a duplicate entry")
    return tokens


def check_head(head: tuple[np.ndarray, np.ndarray], meta: dict) -> None:
    """A ``head.npz`` override: finite, bounded weights (its shape was checked before it was read)."""
    for a in head:
        _want(bool(np.isfinite(a).all()) and float(np.abs(a).max(initial=0.0)) <= MAX_ABS_HEAD,
              f"head override holds non-finite values or values over {MAX_ABS_HEAD:g}")


def check_graph(meta: dict, graph: Graph) -> None:
    """The tensors edgekit.json points at exist in the flatbuffer with the shapes and types the runtime reads."""
    t, f, v = meta["context_length"], meta["feature_dim"], meta["vocab_size"]
    pos = meta["inputs"]["tokens"]
    _want(pos < len(graph.inputs), f"inputs.tokens = {pos}: the model has {len(graph.inputs)} inputs")
    _tensor(graph, graph.inputs[pos], "int32", (1, t), "the tokens input")
    outputs = meta["outputs"]
    _want(len(set(outputs.values())) == len(outputs) and max(outputs.values()) < len(graph.outputs),
          f"outputs {outputs} do not name distinct outputs of the model's {len(graph.outputs)}")
    _tensor(graph, graph.outputs[outputs["features"]], "float32", (1, f), "the features output")
    _tensor(graph, graph.outputs[outputs["logits"]], "float32", (1, v), "the logits output")
    if "top_ids" in outputs:
        k = graph.tensors[graph.outputs[outputs["top_ids"]]].shape[-1:] or (0,)
        _want(1 <= k[0] <= v, "the top_ids output is not a ranking of the words")
        _tensor(graph, graph.outputs[outputs["top_ids"]], "int32", (1, k[0]), "the top_ids output")
        _tensor(graph, graph.outputs[outputs["top_values"]], "float32", (1, k[0]), "the top_values output")
        _tensor(graph, graph.outputs[outputs["sum_exp"]], "float32", (1, 1), "the sum_exp output")
    head = meta["head"]
    _want(head["weight_tensor"] < len(graph.tensors) and graph.tensors[head["weight_tensor"]].constant
          and graph.tensors[head["weight_tensor"]].shape == (v, f),
          "head.weight_tensor is not the [vocab, features] head")
    if head.get("bias_tensor") is not None:
        b = head["bias_tensor"]
        _want(b < len(graph.tensors) and graph.tensors[b].constant and graph.tensors[b].shape == (v,),
              "head.bias_tensor is not the [vocab] head bias")


def _tensor(graph: Graph, index: int, dtype: str, shape: tuple[int, ...], what: str) -> None:
    t = graph.tensors[index]
    _want(t.dtype == dtype and t.shape == shape, f"{what} is {t.dtype} {list(t.shape)}, expected {dtype} {list(shape)}")


def _outputs(outputs: Any) -> None:
    _want(isinstance(outputs, dict) and set(outputs) <= set(OUTPUT_NAMES), "outputs is not an object of output names")
    for name in ("features", "logits"):
        _int(outputs, name, 0, 64, "outputs.")
    ranking = [n for n in OUTPUT_NAMES[2:] if n in outputs]
    _want(ranking in ([], list(OUTPUT_NAMES[2:])), "outputs has part of the word ranking")
    for name in ranking:
        _int(outputs, name, 0, 64, "outputs.")


def _head(head: Any) -> None:
    _want(isinstance(head, dict), "head is not an object")
    _int(head, "weight_tensor", 0, 1 << 20, "head.")
    if head.get("bias_tensor") is not None:
        _int(head, "bias_tensor", 0, 1 << 20, "head.")


def _tokenizer(config: Any) -> None:
    _want(isinstance(config, dict), "tokenizer is not an object")
    _want(all(isinstance(config.get(k, True), bool) for k in ("lowercase", "numbers_as_token")),
          "tokenizer options are not true/false")
    try:
        TokenizerConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"tokenizer: {e}") from None


def _ranked_ids(meta: dict) -> None:
    r = meta["ranked_ids"]
    _want(r is None or (isinstance(r, list) and len(r) == 2 and all(_is_int(v) for v in r)
                        and 0 <= r[0] < r[1] <= meta["vocab_size"]), "ranked_ids is not a [start, end) range of ids")


def _inputs(meta: dict) -> None:
    _want(isinstance(meta["inputs"], dict), "inputs is not an object")
    _int(meta["inputs"], "tokens", 0, 64, "inputs.")


REQUIRED_TO_RUN = ("context_length", "quantization", "tokenizer", "inputs", "outputs", "head")
# The fields only a device running the file reads, each with its check (older files lack the optional ones).
_RUNTIME_FIELDS = {
    "context_length": lambda m: _int(m, "context_length", 1, MAX_CONTEXT),
    "quantization": lambda m: _text(m, "quantization", 32),
    "compat": lambda m: _text(m, "compat", 64),
    "tokenizer": lambda m: _tokenizer(m["tokenizer"]),
    "inputs": _inputs,
    "outputs": lambda m: _outputs(m["outputs"]),
    "head": lambda m: _head(m["head"]),
    "ranked_ids": _ranked_ids,
}


def _text(meta: dict, key: str, max_len: int) -> None:
    _want(isinstance(meta.get(key), str) and 0 < len(meta[key]) <= max_len, f"{key} is not a short text")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(obj: dict, key: str, low: int, high: int, where: str = "") -> int:
    v: Any = obj.get(key)
    _want(_is_int(v) and low <= v <= high, f"{where}{key} = {v!r}, expected a whole number in {low}..{high}")
    return v


def _want(ok: Any, problem: str) -> None:
    if not ok:
        raise ModelFileError(problem)
