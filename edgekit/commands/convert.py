"""``edgekit convert``: a Keras model -> edgekit ``.tflite`` files, with a quality report.

The options live here; the work lives in ``edgekit.converters.pipeline``,
which imports TensorFlow only once the inputs have passed their checks.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..converters import pipeline
from ..converters.modes import ALL_MODES, COMPAT_TARGETS, DEFAULT_COMPAT, DEFAULT_QUANTIZE, QUANTIZE_MODES
from .common import deprecated_model_argument, model_from, model_option, out_option


@click.command("convert")
@model_option("Keras model (.keras) [default: the bundled edgekit-en, in a source checkout].")
@deprecated_model_argument
@out_option("Output file; with --quantize all, a folder [default: the current folder]. "
            "Files are named <name>-<mode>.tflite when OUT is a folder.", type=click.Path(path_type=Path))
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES + ("all",)), default=DEFAULT_QUANTIZE,
              show_default=True, help="Weight/activation precision; 'all' writes the first four. "
              "int8-mixed: int8 weights, the recurrent gates and features projection in float32.")
@click.option("--vocab", type=click.Path(path_type=Path),
              help="Vocabulary file (one token per line); default: vocab.txt beside the model.")
@click.option("--calibration-text", type=click.Path(path_type=Path),
              help="UTF-8 text whose contexts calibrate int8 (default: the shipped training text).")
@click.option("--compat", type=click.Choice(COMPAT_TARGETS), default=DEFAULT_COMPAT, show_default=True,
              help="Target runtime; tflite-runtime-2.14 avoids op versions that runtime cannot load.")
@click.option("--name", help="Model name stored in the file (default: the model's file name, e.g. edgekit-en).")
@click.option("--eval-text", type=click.Path(path_type=Path),
              help="Held-out UTF-8 text for the report (default: the shipped held-out email).")
@click.option("--eval-max", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Score at most this many words per model; 0 skips evaluation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert(model_path: Path | None, legacy_model: Path | None, out: Path | None, quantize: str,
            vocab: Path | None, calibration_text: Path | None, compat: str, name: str | None,
            eval_text: Path | None, eval_max: int, as_json: bool) -> None:
    """Convert a Keras next-word model (-m; default: the bundled edgekit-en) to edgekit .tflite files.

    The model is a .keras file taking int token ids [batch, context_length] and ending in a
    Dense layer with one unit per vocabulary entry. The report gives each file's size and
    top-1/top-3/perplexity on held-out text next to the float Keras model's.
    `edgekit convert MODEL` (the model as an argument) still works in this release, with a warning.
    """
    model = model_from(model_path, legacy_model, "convert") or pipeline.bundled_model()
    vocab = vocab or model.parent / "vocab.txt"
    modes = ALL_MODES if quantize == "all" else (quantize,)
    # Every input is checked before TensorFlow loads (seconds): a typo fails at once, not after the import.
    for path, what in ((model, "Keras model"), (vocab, "vocabulary")):
        if not path.is_file():
            raise click.UsageError(f"{path}: no such {what} file")
    name = name or model.stem
    targets = pipeline.output_paths(out, modes, name)
    calibration = pipeline.calibration_lines(calibration_text, modes)
    eval_text = pipeline.eval_text_path(eval_text, eval_max)
    try:
        with pipeline.native_logs_hidden():  # importing and running TensorFlow logs dozens of lines natively
            report = pipeline.run(model, vocab, targets, compat, name, calibration, eval_text, eval_max)
    except (OSError, ValueError) as e:  # ContractError and ConversionError are ValueErrors
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report, indent=1) if as_json else pipeline.format_report(report))
