"""Pieces every command shares: model/state options, JSON output, clean errors."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import click

# Errors that mean "bad input", not "bug": shown as one line, exit code 1.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)


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


def model_options(fn: Callable) -> Callable:
    """``--model`` (default: the bundled model) and ``--state-dir``."""
    fn = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="Personal state folder [default: $EDGEKIT_STATE_DIR or the per-user data folder].")(fn)
    return click.option("--model", "-m", "model_path", type=click.Path(path_type=Path), default=None,
                        help="Model file (.tflite) [default: the bundled English model].")(fn)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def emit(data, as_json: bool, human: Callable[[object], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else human(data))


def load_model(model_path: Path | None, state_dir: Path | None, stateless: bool = False):
    from ..model import EdgeModel

    return EdgeModel.load(model_path, state_dir=state_dir, stateless=stateless)
