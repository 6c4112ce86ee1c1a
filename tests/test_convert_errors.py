"""Every way `edgekit convert` can be misused: clear message, non-zero exit, no output left."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.convert


def run_convert(model: str, *args: str):
    from click.testing import CliRunner

    from edgekit.cli import main

    return CliRunner().invoke(main, ["convert", "-m", model, *args, "--eval-max", "0"])


def assert_fails(result, message: str, out_dir) -> None:
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not list(out_dir.iterdir()) if out_dir.exists() else True, "partial output left behind"


@pytest.fixture
def out_dir(tmp_path):
    return tmp_path / "out"


def test_missing_model_file(out_dir, tmp_path):
    result = run_convert(str(tmp_path / "nope.keras"), "-o", str(out_dir / "x.tflite"))
    assert_fails(result, "no such Keras model file", out_dir)


@pytest.mark.parametrize("content", [b"just some text\n", b"PK\x03\x04 not really a zip"])
def test_file_that_is_not_a_keras_model(out_dir, tmp_path, content):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(content)
    (tmp_path / "v.txt").write_text("<pad>\n", encoding="utf-8")
    result = run_convert(str(bad), "-o", str(out_dir / "x.tflite"), "--vocab", str(tmp_path / "v.txt"))
    assert_fails(result, "not a loadable Keras model", out_dir)


def test_missing_vocabulary(out_dir, tiny_keras_dir, tmp_path):
    result = run_convert(str(tiny_keras_dir / "model.keras"), "-o", str(out_dir / "x.tflite"),
                         "--vocab", str(tmp_path / "missing.txt"))
    assert_fails(result, "no such vocabulary file", out_dir)


def test_vocabulary_not_matching_the_head(out_dir, tiny_keras_dir, tiny_vocab, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("\n".join(tiny_vocab.tokens[:100]) + "\n", encoding="utf-8")
    result = run_convert(str(tiny_keras_dir / "model.keras"), "-o", str(out_dir / "x.tflite"), "--vocab", str(short))
    assert_fails(result, f"last layer is a Dense layer with {len(tiny_vocab)} units, "
                         "expected a Dense layer with 100 units matching the vocabulary", out_dir)


def test_empty_calibration_text(out_dir, tiny_keras_dir, tmp_path):
    """Refused before any of the four variants is written."""
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    result = run_convert(str(tiny_keras_dir / "model.keras"), "-o", str(out_dir), "--quantize", "all",
                         "--calibration-text", str(empty))
    assert_fails(result, "calibration text is empty", out_dir)


def test_model_needing_flex_ops(out_dir, tmp_path, tiny_vocab):
    import keras

    from edgekit.converters.convert import ConversionError, convert

    @keras.saving.register_keras_serializable(package="edgekit_tests")
    class Digamma(keras.layers.Layer):
        """A TensorFlow op with no TFLite builtin kernel."""

        def call(self, x):
            import tensorflow as tf

            return tf.math.digamma(tf.abs(x) + 1.0)

    tokens = keras.Input((4,), dtype="int32")
    x = Digamma()(keras.layers.Flatten()(keras.layers.Embedding(len(tiny_vocab), 8)(tokens)))
    model = keras.Model(tokens, keras.layers.Dense(len(tiny_vocab))(keras.layers.Dense(6)(x)))
    with pytest.raises(ConversionError, match=r"needs Select TF ops \(Flex\) \(Digamma\), which device runtimes"):
        convert(model, tiny_vocab, out_dir / "x.tflite", quantize="none")
    assert not out_dir.exists() or not list(out_dir.iterdir())

    model.save(tmp_path / "flex.keras")
    (tmp_path / "vocab.txt").write_text("\n".join(tiny_vocab.tokens) + "\n", encoding="utf-8")
    result = run_convert(str(tmp_path / "flex.keras"), "-o", str(out_dir / "x.tflite"))
    assert_fails(result, "needs Select TF ops (Flex)", out_dir)


def test_float_input_is_refused(tiny_vocab):
    import keras

    from edgekit.converters.contract import ContractError, contract_model

    x = keras.Input((4,), dtype="float32")
    model = keras.Model(x, keras.layers.Dense(len(tiny_vocab))(keras.layers.Dense(6)(x)))
    with pytest.raises(ContractError, match="expected integer token ids"):
        contract_model(model, tiny_vocab)


def test_unknown_mode_is_a_usage_error(tiny_keras_dir, out_dir):
    result = run_convert(str(tiny_keras_dir / "model.keras"), "-o", str(out_dir), "--quantize", "int4")
    assert_fails(result, "Invalid value for '--quantize'", out_dir)


def test_calibration_without_words_is_refused(tiny_vocab):
    from edgekit.converters.convert import ConversionError, calibration_contexts
    from edgekit.tokenizer import Tokenizer

    with pytest.raises(ConversionError, match="calibration text is empty"):
        calibration_contexts(["", "   ", "\t"], tiny_vocab, 4, Tokenizer())


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.tflite", "no such model file"),
    (lambda d: (d / "model.onnx").write_bytes(b"x") and d / "model.onnx", "expected a .tflite"),
    (lambda d: (d / "junk.tflite").write_bytes(b"not a model") and d / "junk.tflite", "not a TensorFlow Lite model"),
])
def test_evaluate_refuses_bad_models(tmp_path, tiny_text, make, message):
    from click.testing import CliRunner

    from edgekit.cli import main

    result = CliRunner().invoke(main, ["evaluate", "-m", str(make(tmp_path)), "--text", str(tiny_text)])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_evaluate_refuses_missing_or_binary_text(tmp_path, tiny_keras_dir):
    from click.testing import CliRunner

    from edgekit.cli import main

    model = str(tiny_keras_dir / "model.keras")
    result = CliRunner().invoke(main, ["evaluate", "-m", model, "--text", str(tmp_path / "none.txt")])
    assert result.exit_code != 0 and "no such text file" in result.output
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    result = CliRunner().invoke(main, ["evaluate", "-m", model, "--text", str(tmp_path / "bin.txt")])
    assert result.exit_code != 0 and "not UTF-8 text" in result.output


def test_rolled_lstm_is_refused_with_the_fix(tiny_vocab):
    import keras

    from edgekit.converters.contract import ContractError, contract_model

    tokens = keras.Input((4,), dtype="int32")
    x = keras.layers.LSTM(8, name="rolled")(keras.layers.Embedding(len(tiny_vocab), 4)(tokens))
    with pytest.raises(ContractError, match=r"layer 'rolled' \(LSTM\) needs unroll=True"):
        contract_model(keras.Model(tokens, keras.layers.Dense(len(tiny_vocab))(x)), tiny_vocab)
