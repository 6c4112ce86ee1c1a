"""Conversion of a tiny model in every mode, checked in a real interpreter against Keras."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

MODES = ("none", "float16", "dynamic", "int8", "int8-mixed")
ALL_MODES = MODES[:4]  # what --quantize all writes
# Largest logit difference from Keras allowed per mode (the tiny model's logits have std ~0.5);
# measured: none 4e-7, float16 4e-4, dynamic 5e-4, int8 0.025, int8-mixed 0.02.
LOGIT_TOLERANCE = {"none": 1e-5, "float16": 5e-3, "dynamic": 5e-3, "int8": 0.1, "int8-mixed": 0.1}
REPO = Path(__file__).resolve().parent.parent
COMPAT_PYTHON = REPO / ".venv-compat" / "bin" / "python"

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_model, tiny_vocab, tiny_text):
    """Every mode converted once: mode -> (path, ModelFile)."""
    from edgekit.converters.convert import convert

    folder = tmp_path_factory.mktemp("converted")
    lines = tiny_text.read_text(encoding="utf-8").splitlines()
    return {mode: (folder / f"tiny-{mode}.tflite",
                   convert(tiny_model, tiny_vocab, folder / f"tiny-{mode}.tflite", quantize=mode,
                           calibration_lines=lines, name="tiny"))
            for mode in MODES}


def contexts(vocab, n: int = 16) -> np.ndarray:
    return np.random.default_rng(2).integers(0, vocab.first_slot, (n, 4)).astype(np.int32)


def run_interpreter(flatbuffer: bytes, metadata: dict, ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Features and logits through ai-edge-litert, using only the metadata's indices."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    index = interp.get_input_details()[metadata["inputs"]["tokens"]]["index"]
    interp.resize_tensor_input(index, list(ids.shape))
    interp.allocate_tensors()
    interp.set_tensor(index, ids)
    interp.invoke()
    outs = interp.get_output_details()
    names = ("features", "logits", "top_values", "top_ids", "sum_exp")
    return tuple(interp.get_tensor(outs[metadata["outputs"][k]]["index"]) for k in names)


@pytest.mark.parametrize("mode", MODES)
def test_logits_match_keras(converted, tiny_model, tiny_vocab, mode):
    ids = contexts(tiny_vocab)
    want_features, want_logits = (np.asarray(a) for a in tiny_model(ids, training=False))
    features, logits, *_ = run_interpreter(converted[mode][1].flatbuffer, converted[mode][1].metadata, ids)
    assert logits.shape == (len(ids), len(tiny_vocab)) and features.shape == (len(ids), 12)
    assert np.abs(logits - want_logits).max() < LOGIT_TOLERANCE[mode]
    assert np.abs(features - want_features).max() < LOGIT_TOLERANCE[mode]
    assert (logits.argmax(1) == want_logits.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("mode", MODES)
def test_top_k_outputs_rank_the_logits(converted, tiny_vocab, mode):
    """The device reads its best words from the top-k outputs: the best word logits in order, no specials or slots."""
    from edgekit.converters.convert import TOP_K

    meta = converted[mode][1].metadata
    _, logits, values, ids, _ = run_interpreter(converted[mode][1].flatbuffer, meta, contexts(tiny_vocab))
    start, end = meta["ranked_ids"]
    assert (start, end) == (5, tiny_vocab.first_slot)
    assert ids.shape == values.shape == (len(logits), TOP_K) and ids.dtype == np.int32
    assert np.all((ids >= start) & (ids < end))
    assert np.allclose(np.take_along_axis(logits, ids, axis=1), values)
    assert np.all(np.diff(values, axis=1) <= 0)
    assert np.allclose(values[:, -1], -np.sort(-logits[:, start:end], axis=1)[:, TOP_K - 1])


@pytest.mark.parametrize("mode", MODES)
def test_softmax_normaliser_is_float_in_every_mode(converted, tiny_vocab, mode):
    """sum_exp (over the words) stays float32 even in an int8 file: int8 would zero most of its terms."""
    meta = converted[mode][1].metadata
    _, logits, _, _, sum_exp = run_interpreter(converted[mode][1].flatbuffer, meta, contexts(tiny_vocab))
    start, end = meta["ranked_ids"]
    assert sum_exp.shape == (len(logits), 1)
    assert np.allclose(sum_exp[:, 0], np.exp(logits[:, start:end].astype(np.float64)).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_metadata_round_trip(converted, tiny_model, tiny_vocab, mode):
    from edgekit.converters.convert import dequantize
    from edgekit.modelfile import read_model_file
    from edgekit.tokenizer import TokenizerConfig

    path, written = converted[mode]
    read = read_model_file(path)
    assert read.metadata == written.metadata and read.vocab == tiny_vocab.tokens
    meta = read.metadata
    assert (meta["quantization"], meta["compat"], meta["name"]) == (mode, "litert", "tiny")
    assert (meta["context_length"], meta["feature_dim"], meta["vocab_size"], meta["personal_slots"]) == \
        (4, 12, len(tiny_vocab), 4)
    assert TokenizerConfig.from_dict(meta["tokenizer"]) == TokenizerConfig()
    assert set(meta["outputs"]) == {"features", "logits", "top_values", "top_ids", "sum_exp"}
    assert meta["inputs"] == {"tokens": 0}

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=read.flatbuffer)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    weight, bias = tiny_model.get_layer("head").get_weights()
    got_w = dequantize(interp, details[meta["head"]["weight_tensor"]])
    got_b = dequantize(interp, details[meta["head"]["bias_tensor"]])
    assert np.abs(got_w - weight.T).max() <= 0.01 * np.abs(weight).max()
    assert np.abs(got_b - bias).max() <= 0.01 * np.abs(bias).max()


def test_edge_model_reads_converted_files(converted, tiny_model, tiny_vocab):
    """The device side (EdgeModel) finds the same head and runs batches."""
    from edgekit.model import EdgeModel

    weight, bias = tiny_model.get_layer("head").get_weights()
    for mode in MODES:
        model = EdgeModel.load(converted[mode][0], stateless=True, unsigned_local=True)
        w, b = model.base_head
        assert np.abs(w - weight).max() <= 0.01 * np.abs(weight).max(), mode
        assert np.abs(b - bias).max() <= 0.01 * np.abs(bias).max(), mode
        assert model.probabilities(contexts(tiny_vocab, 300)).shape == (300, len(tiny_vocab))


def test_int8_mixed_keeps_gates_and_features_float_and_weights_int8(converted):
    """int8-mixed: the cell's gates and the features projection run in float32; the cell's and the
    head's matrix products and all their weights stay int8, so the file keeps int8's size."""
    from ai_edge_litert.interpreter import Interpreter

    def output_types(mode: str) -> tuple[dict[str, set[str]], dict[int, dict]]:
        interp = Interpreter(model_content=converted[mode][1].flatbuffer)
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
        types: dict[str, set[str]] = {}
        for op in interp._get_ops_details():
            types.setdefault(op["op_name"], set()).update(tensors[i]["dtype"].__name__ for i in op["outputs"])
        return types, tensors

    (mixed, tensors), (full, _) = output_types("int8-mixed"), output_types("int8")
    assert full["LOGISTIC"] == full["TANH"] == full["FULLY_CONNECTED"] == {"int8"}
    assert mixed["LOGISTIC"] == mixed["TANH"] == {"float32"}
    assert mixed["FULLY_CONNECTED"] == {"int8", "float32"} and "QUANTIZE" in mixed  # features float, the rest int8
    assert tensors[converted["int8-mixed"][1].metadata["head"]["weight_tensor"]]["dtype"] == np.int8
    size = {mode: len(converted[mode][1].flatbuffer) for mode in ("int8", "int8-mixed", "none")}
    assert size["int8-mixed"] < 1.2 * size["int8"] < size["none"]


def test_sizes_shrink_with_quantization(converted):
    size = {mode: len(converted[mode][1].flatbuffer) for mode in MODES}
    assert size["float16"] < size["none"] and size["dynamic"] < size["none"]


def test_fingerprint_binds_weights_not_precision(converted, tiny_model_factory, tiny_vocab, tmp_path):
    from edgekit.converters.convert import convert

    prints = {converted[mode][1].fingerprint for mode in MODES}
    assert len(prints) == 1, "quantized variants of one model are one model version"
    again = convert(tiny_model_factory(), tiny_vocab, tmp_path / "again.tflite", quantize="none")
    assert again.fingerprint in prints

    changed = tiny_model_factory()
    w, b = changed.get_layer("head").get_weights()
    changed.get_layer("head").set_weights([w, b + 0.01])
    other = convert(changed, tiny_vocab, tmp_path / "other.tflite", quantize="none")
    assert other.fingerprint not in prints
    assert other.metadata["body_sha256"] == again.metadata["body_sha256"]
    assert other.metadata["head_sha256"] != again.metadata["head_sha256"]


def test_zero_bias_is_recorded_as_folded(tiny_model_factory, tiny_vocab, tmp_path):
    from edgekit.converters.convert import convert

    model = tiny_model_factory(random_head=False)  # a fresh Dense bias is all zeros
    meta = convert(model, tiny_vocab, tmp_path / "zero.tflite", quantize="dynamic").metadata
    assert meta["head"]["bias_tensor"] is None and isinstance(meta["head"]["weight_tensor"], int)


def test_single_output_softmax_model_is_wrapped(tiny_vocab, tmp_path):
    """A user's model: one softmax output; the head's input becomes the feature output."""
    import keras

    from edgekit.converters.convert import convert

    tokens = keras.Input((4,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(len(tiny_vocab), 8)(tokens))
    x = keras.layers.Dense(10, activation="relu")(x)
    probs = keras.layers.Dense(len(tiny_vocab), activation="softmax")(x)
    model = keras.Model(tokens, probs)
    written = convert(model, tiny_vocab, tmp_path / "user.tflite", quantize="none")
    ids = contexts(tiny_vocab)
    features, logits, *_ = run_interpreter(written.flatbuffer, written.metadata, ids)
    assert written.metadata["feature_dim"] == 10 and features.shape == (len(ids), 10)
    got = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got / got.sum(1, keepdims=True), np.asarray(model(ids)), atol=1e-5)


def test_cli_convert_all_with_report(tiny_keras_dir, tiny_text, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(tiny_keras_dir / "model.keras"), "-o", str(out),
                                       "--quantize", "all", "--calibration-text", str(tiny_text),
                                       "--eval-text", str(tiny_text), "--eval-max", "200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"model-{m}.tflite" for m in ALL_MODES)
    assert report["keras"]["targets"] == 200
    for row in report["variants"]:
        assert row["bytes"] == Path(row["path"]).stat().st_size
        assert abs(row["top3"] - report["keras"]["top3"]) <= 0.02, row


def test_cli_evaluate_tflite_and_keras_agree(converted, tiny_keras_dir, tiny_text):
    from click.testing import CliRunner

    from edgekit.cli import main

    runner = CliRunner()
    scores = []
    for model in (converted["none"][0], tiny_keras_dir / "model.keras"):
        result = runner.invoke(main, ["evaluate", str(model), "--unsigned-local", "--text", str(tiny_text), "--json"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(result.stdout))
    assert scores[0]["targets"] == scores[1]["targets"] > 0
    assert scores[0]["top3"] == pytest.approx(scores[1]["top3"])
    assert scores[0]["perplexity"] == pytest.approx(scores[1]["perplexity"], rel=1e-3)


@pytest.mark.skipif(not COMPAT_PYTHON.exists(), reason="no .venv-compat with tflite-runtime 2.14 (python3.11 -m venv "
                    ".venv-compat && .venv-compat/bin/pip install 'tflite-runtime==2.14.*' 'numpy<2' threadpoolctl "
                    "platformdirs cryptography flatbuffers)")
def test_compat_files_load_in_tflite_runtime_214(tiny_model, tiny_vocab, tiny_text, tmp_path):
    """Run the compat files through EdgeModel in a separate venv with tflite-runtime 2.14 and numpy<2."""
    from edgekit.converters.convert import convert

    lines = tiny_text.read_text(encoding="utf-8").splitlines()
    ids = contexts(tiny_vocab)
    np.save(tmp_path / "ids.npy", ids)
    want = np.asarray(tiny_model(ids, training=False)[1])
    for mode in MODES:
        convert(tiny_model, tiny_vocab, tmp_path / f"{mode}.tflite", quantize=mode, calibration_lines=lines,
                compat="tflite-runtime-2.14")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([str(COMPAT_PYTHON), "-c", COMPAT_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    if "No module named 'tflite_runtime'" in proc.stderr:
        pytest.skip("tflite_runtime is not installed in .venv-compat")
    assert proc.returncode == 0, proc.stderr
    weight = tiny_model.get_layer("head").get_weights()[0]
    for mode in MODES:
        logits = np.load(tmp_path / f"{mode}.logits.npy")
        assert np.abs(logits - want).max() < LOGIT_TOLERANCE[mode], mode
        assert np.abs(np.load(tmp_path / f"{mode}.head.npy") - weight).max() <= 0.01 * np.abs(weight).max(), mode


# Runs inside .venv-compat (numpy<2, tflite_runtime, no TensorFlow): the device code path.
COMPAT_SCRIPT = """
import sys, pathlib, numpy as np
from edgekit.model import EdgeModel
folder = pathlib.Path(sys.argv[1])
ids = np.load(folder / "ids.npy")
for path in sorted(folder.glob("*.tflite")):
    model = EdgeModel.load(path, stateless=True, runtime="tflite-runtime", unsigned_local=True)
    assert model.runtime == "tflite-runtime", model.runtime
    np.save(folder / (path.stem + ".logits.npy"), model.features_logits(ids)[1])
    np.save(folder / (path.stem + ".head.npy"), model.base_head[0])
"""


def test_each_calibration_says_which_it_is(tiny_model, tiny_vocab, tiny_text, tmp_path, capfd):
    """int8-mixed converts twice, calibrating each time (the first finds the features layer): two bars,
    each named, not the same bar twice; int8 shows one."""
    from edgekit.converters.convert import convert

    lines = tiny_text.read_text(encoding="utf-8").splitlines()[:50]
    for mode in ("int8-mixed", "int8"):
        convert(tiny_model, tiny_vocab, tmp_path / f"{mode}.tflite", quantize=mode, calibration_lines=lines,
                name="tiny", progress=True)
        bars = [line for line in capfd.readouterr().err.replace("\r", "\n").splitlines() if "calibration" in line]
        labels = {line.split("[")[0].strip() for line in bars}
        assert labels == ({"int8 calibration (1/2, finding the features layer)", "int8 calibration (2/2)"}
                          if mode == "int8-mixed" else {"int8 calibration"}), labels
