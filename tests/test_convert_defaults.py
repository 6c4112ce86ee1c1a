"""Without models/ and data/ (a pip install without -e), the converter commands say how to get them.

The default folders are pointed at an empty temporary folder, which is what a
non-editable install sees beside the package in site-packages.
"""
from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from converters import corpus, keras_model
from converters.commands import calibration_lines
from edgekit.cli import main

HINT = "ship with a source checkout: run from one installed with pip install -e '.[convert]', or pass"


@pytest.fixture
def no_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(keras_model, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(corpus, "DATA_DIR", tmp_path / "data")
    return tmp_path


@pytest.mark.parametrize("args, instead", [(["convert"], "-m/--model"), (["train-base"], "--data-dir")])
def test_commands_explain_the_missing_default(no_checkout, args, instead):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output  # a usage error, not a crash
    assert f"{HINT} {instead}" in result.output
    assert str(no_checkout) in result.output


def test_int8_calibration_explains_the_missing_data(no_checkout):
    with pytest.raises(click.UsageError) as error:
        calibration_lines(None, ("int8",))
    assert error.value.message.startswith("int8 needs calibration text: ")
    assert error.value.message.endswith(f"{HINT} --calibration-text")
