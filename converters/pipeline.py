"""What ``edgekit convert`` runs: check the inputs, convert every mode, score them, report.

The checks run before TensorFlow is imported (``edgekit.commands.convert``
calls them first), so a typo fails in a second, not after the import; the
conversion and scoring import TensorFlow inside ``run``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import click

from . import CheckoutFolderMissing, missing_from_checkout, require_checkout
from .modes import CALIBRATED_MODES

CALIBRATION_LINES_PER_FILE = 500  # of each training file: 4,500 lines over the nine sources


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


def run(model_path: Path, vocab_path: Path, targets: dict[str, Path], compat: str, name: str,
         calibration: list[str] | None, eval_text: Path | None, eval_max: int) -> dict:
    """Everything that needs TensorFlow: load, convert each mode, score."""
    from .contract import load_keras_model, read_vocab

    keras_model = load_keras_model(model_path)
    vocab = read_vocab(vocab_path)
    files = _convert_all(keras_model, vocab, tuple(targets), targets, compat, name, calibration)
    report = {"model": str(model_path), "keras_bytes": model_path.stat().st_size, "compat": compat,
              "eval_text": str(eval_text) if eval_text else None, "variants": files}
    if eval_text:
        _evaluate_all(report, keras_model, vocab, eval_text, eval_max)
    return report


def bundled_model() -> Path:
    """The default MODEL, checked before TensorFlow loads: a pip install without -e has none."""
    from . import keras_model

    folder = keras_model.MODELS_DIR
    try:
        return require_checkout(folder / keras_model.MODEL_FILE if folder else None, "-m/--model")
    except CheckoutFolderMissing as e:
        raise click.UsageError(str(e)) from None


def output_paths(output: Path | None, modes: tuple[str, ...], name: str) -> dict[str, Path]:
    """Where each mode goes: OUT itself for one mode unless it is a folder, else OUT/<name>-<mode>.tflite."""
    if len(modes) == 1 and output is not None and not output.is_dir():
        return {modes[0]: output}
    folder = output or Path.cwd()
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"{folder}: with --quantize all, -o/--out must be a folder")
    return {mode: folder / f"{name}-{mode}.tflite" for mode in modes}


def calibration_lines(path: Path | None, modes: tuple[str, ...]) -> list[str] | None:
    """Raw lines for int8 calibration: the given file, else a slice of each shipped training file."""
    if not set(CALIBRATED_MODES) & set(modes):
        return None
    from edgekit.tokenizer import Tokenizer, read_text_lines

    if path is not None:
        if not path.is_file():
            raise click.UsageError(f"{path}: no such calibration text file")
        lines = list(itertools.islice(read_text_lines(path), 20 * CALIBRATION_LINES_PER_FILE))
    else:
        from . import corpus

        try:
            files = [p for p in corpus.train_files(require_checkout(corpus.DATA_DIR, "--calibration-text"))
                     if p.is_file()]
            if not files:
                raise CheckoutFolderMissing(missing_from_checkout(corpus.DATA_DIR, "--calibration-text"))
        except CheckoutFolderMissing as e:
            raise click.UsageError(f"int8 needs calibration text: {e}") from None
        lines = [line for p in files for line in itertools.islice(read_text_lines(p), CALIBRATION_LINES_PER_FILE)]
    # Checked before any conversion runs, so a bad text fails in seconds, not after three variants.
    if not any(Tokenizer().tokenize(line) for line in lines):
        raise click.ClickException(f"{path or 'shipped training text'}: calibration text is empty: "
                                   "it has no words to calibrate int8 quantization on")
    return lines


def eval_text_path(path: Path | None, eval_max: int) -> Path | None:
    if eval_max == 0:
        return None
    if path is not None:
        if not path.is_file():
            raise click.UsageError(f"{path}: no such evaluation text file")
        return path
    from . import corpus

    if corpus.DATA_DIR is None:  # no source checkout: no shipped held-out text
        return None
    default = corpus.heldout_files(corpus.DATA_DIR)["email"]
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

    report["keras"] = evaluate_keras(keras_model, vocab, text, max_targets=eval_max, progress=True).to_dict()
    for row in report["variants"]:
        model = EdgeModel.load(row["path"], stateless=True, unsigned_local=True)  # the file it just wrote
        lines = model.tokenizer.iter_lines(read_text_lines(text))
        row.update(evaluate(model.probabilities, model.vocab, lines, model.context_length, max_targets=eval_max,
                            progress=True, label=row["quantization"]).to_dict())


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

