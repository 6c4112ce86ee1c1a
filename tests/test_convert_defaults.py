"""Without models/ and data/, the converter commands and functions say how to get them.

Two ways to lack them: a checkout whose folders are gone (the defaults point at
an empty temporary folder), and a non-editable install, where there is no
checkout and the defaults are None (tests/test_packaging.py checks that a real
wheel install sees None).
"""
from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.converters import CheckoutFolderMissing, corpus, keras_model
from edgekit.converters.pipeline import calibration_lines
from edgekit.converters.train_base import TrainConfig, train

HINT = "ship with a source checkout: run from one installed with pip install -e '.[convert]', or pass"


@pytest.fixture(params=["folders missing", "installed from a wheel"])
def no_checkout(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Takes the defaults away; returns what the message must name."""
    wheel = request.param == "installed from a wheel"
    monkeypatch.setattr(keras_model, "MODELS_DIR", None if wheel else tmp_path / "models")
    monkeypatch.setattr(corpus, "DATA_DIR", None if wheel else tmp_path / "data")
    return "edgekit.converters is installed without a source checkout" if wheel else str(tmp_path)


@pytest.mark.parametrize("args, instead", [(["convert"], "-m/--model"), (["train-base"], "--data-dir")])
def test_commands_explain_the_missing_default(no_checkout, args, instead):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output  # a usage error, not a crash
    assert f"{HINT} {instead}" in result.output
    assert no_checkout in result.output


def test_int8_calibration_explains_the_missing_data(no_checkout):
    with pytest.raises(click.UsageError) as error:
        calibration_lines(None, ("int8",))
    assert error.value.message.startswith("int8 needs calibration text: ")
    assert error.value.message.endswith(f"{HINT} --calibration-text")


@pytest.mark.parametrize("call, instead", [
    (corpus.train_files, "data_dir"),
    (corpus.personal_file, "data_dir"),
    (keras_model.load_base_model, "path"),  # before importing Keras
    (lambda: train(TrainConfig()), "data_dir"),
])
def test_library_defaults_explain_the_missing_folder(no_checkout, call, instead):
    with pytest.raises(CheckoutFolderMissing) as error:
        call()
    assert no_checkout in str(error.value)
    assert str(error.value).endswith(f"{HINT} {instead}")


def test_training_without_a_checkout_needs_an_output_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(keras_model, "MODELS_DIR", None)
    with pytest.raises(CheckoutFolderMissing, match="installed without a source checkout .* or pass out_dir$"):
        train(TrainConfig(), data_dir=tmp_path)
