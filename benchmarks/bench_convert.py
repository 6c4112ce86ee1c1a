"""Conversion benchmark: time to convert, file size and bare invoke latency per mode.

    python -m benchmarks.bench_convert [--model models/edgekit-en.keras] [--json]

Uses the bundled Keras model when present, else a tiny untrained one (so the
command always runs). int8 calibrates on the shipped training text (or, for
the tiny model, on generated sentences). Latency: median of single-context
``invoke()`` calls on one thread, after a warm-up; suggestions add host work
on top, which ``benchmarks/bench_runtime.py`` measures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("none", "float16", "dynamic", "int8")
INVOKES = 200


def load_model(path: Path):
    """The Keras model, its vocabulary and calibration lines; a tiny stand-in if ``path`` is missing."""
    from edgekit.converters.contract import load_keras_model, read_vocab

    if path.is_file():
        from edgekit.converters.pipeline import calibration_lines

        lines = calibration_lines(None, ("int8",))
        return load_keras_model(path), read_vocab(path.parent / "vocab.txt"), lines, path.name
    from edgekit.converters.keras_model import build_model
    from edgekit.tokenizer import SPECIAL_TOKENS
    from edgekit.vocab import Vocabulary

    vocab = Vocabulary(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(2000)])
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(vocab.tokens[5:], 12)) for _ in range(200)]
    return build_model(len(vocab), context_length=8, hidden=64, feature_dim=32), vocab, lines, "tiny (untrained)"


def invoke_latency_ms(path: Path, context_length: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.modelfile import read_model_file

    interp = Interpreter(model_content=read_model_file(path).flatbuffer, num_threads=1)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    interp.set_tensor(index, np.full((1, context_length), 7, np.int32))
    times = []
    for _ in range(INVOKES + 10):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times[10:]) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "edgekit-en.keras")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from edgekit.converters.contract import context_length_of
    from edgekit.converters.convert import convert

    model, vocab, lines, label = load_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed warm-up: the first export pays TensorFlow's one-time tracing (~30 s measured).
        convert(model, vocab, Path(tmp) / "warm-up.tflite", quantize="none")
        for mode in MODES:
            path = Path(tmp) / f"{mode}.tflite"
            start = time.perf_counter()
            convert(model, vocab, path, quantize=mode, calibration_lines=lines)
            rows.append({"mode": mode, "seconds": round(time.perf_counter() - start, 2),
                         "bytes": path.stat().st_size,
                         "invoke_ms": round(invoke_latency_ms(path, context_length_of(model)), 3)})
    if args.json:
        print(json.dumps({"model": label, "rows": rows}, indent=1))
        return
    base = rows[0]["bytes"]
    print(f"model: {label}, vocabulary {len(vocab)}")
    print(f"{'mode':<9} {'convert s':>9} {'size MB':>9} {'vs none':>8} {'invoke ms':>10}")
    for r in rows:
        print(f"{r['mode']:<9} {r['seconds']:>9.2f} {r['bytes'] / 1e6:>9.2f} {r['bytes'] / base:>8.0%} "
              f"{r['invoke_ms']:>10.3f}")


if __name__ == "__main__":
    main()
