"""Pieces every command shares: the option vocabulary, JSON output, clean errors.

One spelling per concept across all commands (``-m/--model`` for a model
read, ``-o/--out`` for what is written, ``--state-dir``, ``--json``), so
these options are made here and nowhere else; ``tests/test_cli_vocabulary.py``
walks every command to keep it so.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..model import EdgeModel

# Errors that mean "bad input", not "bug": shown as one line, exit code 1.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)

POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)
LOCAL_NOISE_HELP = ("Gaussian noise std each device adds to its clipped delta, as a multiple of the clip norm "
                    "(local DP).")
CENTRAL_NOISE_HELP = ("Gaussian noise std the server adds to the sum of clipped deltas, as a multiple of the clip "
                      "norm (central DP; unweighted fedavg only).")


def user_errors(fn: Callable) -> Callable:
    """Turn expected failures into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def model_option(help: str = "Model file (.tflite) [default: the version installed in the state folder, else the "
                                "bundled English model].", *,
                 required: bool = False, exists: bool = False) -> Callable:
    """``-m/--model``, the one way every command is told which model to read."""
    return click.option("-m", "--model", "model_path", type=click.Path(exists=exists, dir_okay=False, path_type=Path),
                        required=required, default=None, help=help)


OUT_FILE = click.Path(dir_okay=False, path_type=Path)
OUT_FOLDER = click.Path(file_okay=False, path_type=Path)


def out_option(help: str, *, type: click.Path = OUT_FILE, **options: Any) -> Callable:
    """``-o/--out``, the one way every command is told where to write (a file, or a folder)."""
    return click.option("-o", "--out", "out", type=type, help=help, **options)


def state_dir_option(fn: Callable) -> Callable:
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Personal state folder [default: $EDGEKIT_STATE_DIR or the per-user data folder].")(fn)


def unsigned_local_option(fn: Callable) -> Callable:
    """``--unsigned-local``: the explicit yes a device needs to run (or install) a file nothing vouches for."""
    return click.option("--unsigned-local", is_flag=True,
                        help="Accept a file without a signature, one you converted yourself: "
                             "it loads as \"unsigned, local\".")(fn)


def model_options(fn: Callable) -> Callable:
    """``-m/--model`` (default: the installed version, else the bundled one), ``--unsigned-local``, ``--state-dir``."""
    return model_option()(unsigned_local_option(state_dir_option(fn)))


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def deprecated_model_argument(fn: Callable) -> Callable:
    """The positional MODEL of ``evaluate`` and ``convert`` before 0.2, kept one version; see ``model_from``."""
    return click.argument("legacy_model", metavar="[MODEL]", required=False,
                          type=click.Path(dir_okay=False, path_type=Path))(fn)


def model_from(option: Path | None, positional: Path | None, command: str) -> Path | None:
    """The model ``-m/--model`` names, or the deprecated positional one (with a warning on stderr)."""
    if positional is None:
        return option
    if option is not None:
        raise click.UsageError(f"two models given ({positional} and -m {option}): pass only -m/--model")
    click.echo(f"warning: `edgekit {command} MODEL` is deprecated and goes in the next release: "
               f"use `edgekit {command} -m MODEL`", err=True)
    return positional


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human(data))


def load_model(model_path: Path | None, state_dir: Path | None, stateless: bool = False, *,
               unsigned_local: bool = False) -> EdgeModel:
    """The device's model: a named file must be bundled, signed by a trusted key, or ``--unsigned-local``."""
    from ..model import EdgeModel

    return EdgeModel.load(model_path, state_dir=state_dir, stateless=stateless, unsigned_local=unsigned_local)
