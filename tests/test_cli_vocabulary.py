"""One vocabulary on the command line: every command spells the same concept the same way.

Walks the real commands (as ``edgekit`` loads them), so a new command or
option that says ``--output``, ``--local-noise`` or takes a model without
``-m`` fails here, and the choices offered are the code's own constants.
"""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgekit.cli import COMMANDS, main

WRITERS = {"convert", "train-base", "keygen", "device-key", "export-update", "aggregate", "simulate"}
MODEL_READERS = {"convert", "evaluate", "info", "suggest", "personalize", "reset", "install", "export-update",
                 "aggregate", "simulate", "words"}
NOISE_OPTIONS = {"--noise-multiplier", "--central-noise-multiplier"}


def command(name: str) -> click.Command:
    found = main.get_command(click.Context(main), name)
    assert found is not None and found.help and "unavailable" not in found.help, name
    return found


def options(name: str) -> list[click.Option]:
    return [p for p in command(name).params if isinstance(p, click.Option)]


# The converter side's commands: a device-only run cannot load them from a checkout.
CONVERTER_COMMANDS = {"convert", "train-base"}
ALL_COMMANDS = [pytest.param(n, marks=pytest.mark.convert) if n in CONVERTER_COMMANDS else n for n in sorted(COMMANDS)]


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_one_spelling_per_concept(name):
    for option in options(name):
        names = option.opts + option.secondary_opts
        if {"-o", "--out", "--output"} & set(names):
            assert option.opts == ["-o", "--out"], (name, names)
        if {"-m", "--model"} & set(names):
            assert option.opts == ["-m", "--model"], (name, names)
        noise = [n for n in names if "noise" in n]
        assert set(noise) <= NOISE_OPTIONS, (name, names)
        if option.name in ("aggregation", "mode"):  # how updates are combined, on a server or in a simulation
            assert option.opts == ["--mode"], (name, names)
        if option.name == "dp_delta":
            assert option.opts == ["--delta"], (name, names)


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_outputs_and_models_have_their_options(name):
    spelled = {n for option in options(name) for n in option.opts}
    assert ("-o" in spelled) == (name in WRITERS), name
    assert ("-m" in spelled) == (name in MODEL_READERS), name


def choices(name: str, flag: str) -> tuple[str, ...]:
    option = next(o for o in options(name) if flag in o.opts)
    return tuple(option.type.choices)


@pytest.mark.convert
def test_choices_come_from_the_code():
    from edgekit.converters.keras_model import CELLS
    from edgekit.converters.modes import COMPAT_TARGETS, QUANTIZE_MODES
    from edgekit.federated import ENCODINGS, MODES

    assert choices("convert", "--quantize") == QUANTIZE_MODES + ("all",)
    assert choices("convert", "--compat") == COMPAT_TARGETS
    assert choices("aggregate", "--mode") == MODES
    assert choices("simulate", "--mode") == MODES
    assert choices("export-update", "--encoding") == ENCODINGS
    assert choices("train-base", "--cell") == CELLS


def test_the_converter_checks_the_same_modes_the_cli_offers():
    """``converters.convert`` (TensorFlow) refuses exactly what the TensorFlow-free choices leave out."""
    pytest.importorskip("keras")
    from edgekit.converters import convert, modes

    assert convert.QUANTIZE_MODES is modes.QUANTIZE_MODES
    assert convert.COMPAT_TARGETS is modes.COMPAT_TARGETS


@pytest.mark.parametrize("args, message", [
    (["personalize", "--text", "x.txt", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    pytest.param(["train-base", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1", marks=pytest.mark.convert),
    pytest.param(["train-base", "--learning-rate", "0"], "'--learning-rate': 0.0 is not in the range x>0",
                 marks=pytest.mark.convert),
    (["simulate", "--epochs", "0"], "'--epochs': 0 is not in the range x>=1"),
    (["simulate", "--noise-multiplier", "-1"], "'--noise-multiplier': -1.0 is not in the range x>=0"),
    (["simulate", "--clip-norm", "0"], "'--clip-norm': 0.0 is not in the range x>0"),
    (["suggest", "-k", "0", "hi"], "'-k': 0 is not in the range x>=1"),
])
def test_ranges_are_checked_before_any_work(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
