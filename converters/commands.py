"""``edgekit convert``: Keras model -> edgekit ``.tflite`` files, with a quality report.

TensorFlow is imported inside the command only: ``edgekit --help`` and the
device commands must stay fast and work without it.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator
import click

from . import missing_from_checkout

# Same as converters.convert.QUANTIZE_MODES / COMPAT_TARGETS, repeated so that
# `edgekit convert --help` does not import TensorFlow.
MODES = ("none", "float16", "dynamic", "int8")
COMPATS = ("litert", "tflite-runtime-2.14")
CALIBRATION_LINES_PER_FILE = 50


@click.command("convert")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file; with --quantize all, a folder (default: the current folder). "
                   "Files are named <name>-<mode>.tflite when OUT is a folder.")
@click.option("--quantize", type=click.Choice(MODES + ("all",)), default="dynamic", show_default=True,
              help="Weight/activation precision; 'all' writes the four variants.")
@click.option("--vocab", type=click.Path(path_type=Path),
              help="Vocabulary file (one token per line); default: vocab.txt beside MODEL.")
@click.option("--calibration-text", type=click.Path(path_type=Path),
              help="UTF-8 text whose contexts calibrate int8 (default: the shipped training text).")
@click.option("--compat", type=click.Choice(COMPATS), default="litert", show_default=True,
              help="Target runtime; tflite-runtime-2.14 avoids op versions that runtime cannot load.")
@click.option("--name", help="Model name stored in the file (default: MODEL's file name, e.g. edgekit-en).")
@click.option("--eval-text", type=click.Path(path_type=Path),
              help="Held-out UTF-8 text for the report (default: the shipped held-out email).")
@click.option("--eval-max", type=click.IntRange(min=0), default=5000, show_default=True,
              help="Score at most this many words per model; 0 skips evaluation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def convert(model: Path | None, output: Path | None, quantize: str, vocab: Path | None,
            calibration_text: Path | None, compat: str, name: str | None, eval_text: Path | None,
            eval_max: int, as_json: bool) -> None:
    """Convert a Keras next-word MODEL (default: the bundled edgekit-en) to edgekit .tflite files.

    MODEL is a .keras file taking int token ids [batch, context_length] and ending in a
    Dense layer with one unit per vocabulary entry. The report gives each file's size and
    top-1/top-3/perplexity on held-out text next to the float Keras model's.
    """
    try:
        with native_logs_hidden():  # importing and running TensorFlow logs dozens of lines natively
            report = _run(model, output, quantize, vocab, calibration_text, compat, name, eval_text, eval_max)
    except (OSError, ValueError) as e:  # ContractError and ConversionError are ValueErrors
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Send TensorFlow's native log lines (fd 2) to a scratch file; Python's stderr stays.

    The converter writes dozens of C++ INFO lines per model ("Reading SavedModel
    ...") that drown the progress bars and report. Python-level output (progress
    bars, warnings, errors) is rerouted to a copy of the real stderr. When stderr
    is not a real file descriptor (tests, embedding apps) nothing changes.
    """
    try:
        sys.stderr.flush()
        is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        is_fd2 = False
    if not is_fd2:
        yield
        return
    saved, python_stderr = os.dup(2), sys.stderr
    with tempfile.TemporaryFile() as sink, open(os.dup(saved), "w", buffering=1) as terminal:
        os.dup2(sink.fileno(), 2)
        sys.stderr = terminal
        try:
            yield
        finally:
            terminal.flush()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)


def _run(model_path, output, quantize, vocab_path, calibration_text, compat, name, eval_text, eval_max) -> dict:
    model_path = model_path or _bundled_model()
    from .contract import load_keras_model, read_vocab

    modes = MODES if quantize == "all" else (quantize,)
    name = name or model_path.stem
    targets = _output_paths(output, modes, name)
    keras_model = load_keras_model(model_path)
    vocab = read_vocab(vocab_path or model_path.parent / "vocab.txt")
    eval_text = _eval_text(eval_text, eval_max)
    files = _convert_all(keras_model, vocab, modes, targets, compat, name, calibration_lines(calibration_text, modes))
    report = {"model": str(model_path), "keras_bytes": model_path.stat().st_size, "compat": compat,
              "eval_text": str(eval_text) if eval_text else None, "variants": files}
    if eval_text:
        _evaluate_all(report, keras_model, vocab, eval_text, eval_max)
    return report


def _bundled_model() -> Path:
    """The default MODEL, checked before TensorFlow loads: a pip install without -e has none."""
    from .keras_model import MODEL_FILE, MODELS_DIR

    path = MODELS_DIR / MODEL_FILE
    if not path.is_file():
        raise click.UsageError(missing_from_checkout(path, "MODEL"))
    return path


def _output_paths(output: Path | None, modes: tuple[str, ...], name: str) -> dict[str, Path]:
    """Where each mode goes: OUT itself for one mode unless it is a folder, else OUT/<name>-<mode>.tflite."""
    if len(modes) == 1 and output is not None and not output.is_dir():
        return {modes[0]: output}
    folder = output or Path.cwd()
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"{folder}: with --quantize all, -o must be a folder")
    return {mode: folder / f"{name}-{mode}.tflite" for mode in modes}


def calibration_lines(path: Path | None, modes: tuple[str, ...]) -> list[str] | None:
    """Raw lines for int8 calibration: the given file, else a slice of each shipped training file."""
    if "int8" not in modes:
        return None
    from edgekit.tokenizer import Tokenizer, read_text_lines

    if path is not None:
        if not path.is_file():
            raise click.UsageError(f"{path}: no such calibration text file")
        lines = list(itertools.islice(read_text_lines(path), 20 * CALIBRATION_LINES_PER_FILE))
    else:
        from .corpus import DATA_DIR, read_lines, train_files

        files = [p for p in train_files() if p.is_file()]
        if not files:
            hint = missing_from_checkout(DATA_DIR, "--calibration-text")
            raise click.UsageError(f"int8 needs calibration text: {hint}")
        lines = [line for p in files for line in itertools.islice(read_lines(p), CALIBRATION_LINES_PER_FILE)]
    # Checked before any conversion runs, so a bad text fails in seconds, not after three variants.
    if not any(Tokenizer().tokenize(line) for line in lines):
        raise click.ClickException(f"{path or 'shipped training text'}: calibration text is empty: "
                                   "it has no words to calibrate int8 quantization on")
    return lines


def _eval_text(path: Path | None, eval_max: int) -> Path | None:
    if eval_max == 0:
        return None
    if path is not None:
        if not path.is_file():
            raise click.UsageError(f"{path}: no such evaluation text file")
        return path
    from .corpus import heldout_files

    default = heldout_files()["email"]
    return default if default.is_file() else None


def _convert_all(keras_model, vocab, modes, targets: dict[str, Path], compat, name, calibration) -> list[dict]:
    """Convert every mode into a scratch folder, then move all into place.

    Either every requested file appears or none does: a failing int8 after a
    good float16 leaves no half-finished set behind.
    """
    from .convert import convert

    rows = []
    scratch_parent = next(iter(targets.values())).parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgekit-convert-", dir=scratch_parent) as scratch:
        for mode in modes:
            start = time.perf_counter()
            written = convert(keras_model, vocab, Path(scratch) / f"{mode}.tflite", quantize=mode,
                              calibration_lines=calibration, compat=compat, name=name, progress=True)
            rows.append({"quantization": mode, "path": str(targets[mode]),
                         "seconds": round(time.perf_counter() - start, 2),
                         "fingerprint": written.fingerprint})
        for mode in modes:
            os.replace(Path(scratch) / f"{mode}.tflite", targets[mode])
    for row in rows:
        row["bytes"] = Path(row["path"]).stat().st_size
    return rows


def _evaluate_all(report: dict, keras_model, vocab, text: Path, eval_max: int) -> None:
    """Score the Keras model and every written file on the same words."""
    from edgekit.metrics import evaluate
    from edgekit.model import EdgeModel
    from edgekit.tokenizer import read_text_lines

    from .keras_eval import evaluate_keras

    report["keras"] = evaluate_keras(keras_model, vocab, text, max_targets=eval_max, progress=True)
    for row in report["variants"]:
        model = EdgeModel.load(row["path"], stateless=True)
        lines = model.tokenizer.iter_lines(read_text_lines(text))
        row.update(evaluate(model.probabilities, model.vocab, lines, model.context_length, max_targets=eval_max,
                            progress=True, label=row["quantization"]))


def format_report(report: dict) -> str:
    """A fixed-width table: one row for Keras, one per written file."""
    head = f"{'model':<34} {'size':>10} {'top-1':>7} {'top-3':>7} {'ppl':>8} {'keys saved':>10}"
    lines = [f"converted {report['model']} (compat: {report['compat']})", head, "-" * len(head)]
    rows = [({"quantization": "keras float32", "bytes": report["keras_bytes"], **report.get("keras", {})},
             "keras float32")] + [(row, Path(row["path"]).name) for row in report["variants"]]
    lines += [_row(label, row) for row, label in rows]
    if report["eval_text"]:
        lines.append(f"scored {report['keras']['targets']} words of {report['eval_text']}")
    else:
        lines.append("no evaluation (--eval-max 0, or no held-out text found)")
    return "\n".join(lines)


def _row(label: str, row: dict) -> str:
    size = f"{row['bytes'] / 1e6:.2f} MB"
    if "top1" not in row:
        return f"{label:<34} {size:>10}"
    return (f"{label:<34} {size:>10} {row['top1']:>7.2%} {row['top3']:>7.2%} "
            f"{row['perplexity']:>8.1f} {row['keystroke_savings']:>10.1%}")

