"""``edgekit evaluate``: top-1/top-3, perplexity and keystroke savings of a model on text.

A ``.tflite`` is scored through ``EdgeModel`` (no TensorFlow import on that
path, so this runs on a device); a ``.keras`` file needs the converter extra
and is scored through ``edgekit.converters.keras_eval``, with the same metrics.
"""
from __future__ import annotations

from pathlib import Path

import click

from .common import (
    deprecated_model_argument,
    emit,
    json_option,
    model_from,
    model_option,
    unsigned_local_option,
    user_errors,
)

METRIC_LABELS = (("top1", "top-1", "{:.2%}"), ("top3", "top-3", "{:.2%}"), ("perplexity", "perplexity", "{:.1f}"),
                 ("keystroke_savings", "keys saved", "{:.1%}"), ("oov_rate", "out of vocab", "{:.1%}"),
                 ("targets", "words scored", "{}"))


@click.command()
@model_option("Model to score: a .tflite (edgekit convert output) or a .keras model.")
@deprecated_model_argument
@click.option("--text", required=True, type=click.Path(path_type=Path),
              help="UTF-8 text to score, one message per line.")
@click.option("--max-targets", type=click.IntRange(min=1), default=None, help="Score only the first N words.")
@click.option("--vocab", type=click.Path(path_type=Path),
              help="For a .keras model: its vocabulary file [default: vocab.txt beside it].")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="For a .tflite model: include the personal state kept in this folder [default: none].")
@unsigned_local_option
@json_option
@user_errors
def evaluate(model_path: Path | None, legacy_model: Path | None, text: Path, max_targets: int | None,
             vocab: Path | None, state_dir: Path | None, unsigned_local: bool, as_json: bool) -> None:
    """Score a model (-m, .tflite or .keras) on the words of --text.

    `edgekit evaluate MODEL --text FILE` (the model as an argument) still
    works in this release, with a warning; use -m MODEL.
    """
    from ..tokenizer import require_text_file

    model = model_from(model_path, legacy_model, "evaluate")
    if model is None:
        raise click.UsageError("no model: pass -m/--model FILE (.tflite or .keras)")
    if not model.is_file():
        raise click.ClickException(f"{model}: no such model file")
    require_text_file(text)
    suffix = model.suffix.lower()
    if suffix == ".tflite":
        result = _evaluate_tflite(model, text, max_targets, state_dir, unsigned_local, progress=not as_json)
    elif suffix == ".keras":
        result = _evaluate_keras(model, text, max_targets, vocab, progress=not as_json)
    else:
        raise click.ClickException(f"{model}: expected a .tflite (edgekit convert output) or a .keras model")
    emit({"model": str(model), "text": str(text), **result}, as_json, _format)


def _evaluate_tflite(model: Path, text: Path, max_targets: int | None, state_dir: Path | None,
                     unsigned_local: bool, progress: bool) -> dict:
    from ..model import EdgeModel

    loaded = EdgeModel.load(model, state_dir=state_dir, stateless=state_dir is None, unsigned_local=unsigned_local)
    return loaded.evaluate(text, max_targets=max_targets, progress=progress).to_dict()


def _evaluate_keras(model: Path, text: Path, max_targets: int | None, vocab: Path | None, progress: bool) -> dict:
    from edgekit.converters.pipeline import native_logs_hidden

    with native_logs_hidden():  # without TensorFlow, the import fails and the CLI names the extra
        from edgekit.converters.contract import load_keras_model, read_vocab
        from edgekit.converters.keras_eval import evaluate_keras

        keras_model = load_keras_model(model)
        return evaluate_keras(keras_model, read_vocab(vocab or model.parent / "vocab.txt"), text,
                              max_targets=max_targets, progress=progress).to_dict()


def _format(data: dict) -> str:
    lines = [f"{data['model']} on {data['text']}"]
    lines += [f"  {label:<13} {fmt.format(data[key])}" for key, label, fmt in METRIC_LABELS if key in data]
    return "\n".join(lines)
