"""Simulation benchmark: wall time and top-3 per round of ``edgekit simulate``.

    python benchmarks/bench_simulate.py                      # 100 clients x 3 rounds, bundled model
    python benchmarks/bench_simulate.py --clients 20 --secure --model m.tflite

Wall time includes Ray's start (and, where TensorFlow is installed, Flower's
Ray workers importing it: roughly 10-20 s once). On a shared machine the
wall time depends on the load; the load average is recorded next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.flower import partitions as parts  # noqa: E402
from edgekit.flower import simulate as sim  # noqa: E402
from edgekit.flower.settings import FederationConfig  # noqa: E402
from edgekit.model import default_model_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--words", type=int, default=1500)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--secure", action="store_true")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    partitions = parts.make_partitions(parts.text_sources(args.data), args.clients, train_words=args.words,
                                       heldout_words=args.words // 5)
    config = FederationConfig(model=str(args.model), rounds=args.rounds, secure=args.secure)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = sim.run(config, partitions, tmp, cpus=args.cpus, on_round=sim.RoundTable())
    seconds = time.perf_counter() - start
    result = {"clients": args.clients, "rounds": args.rounds, "secure": args.secure, "words": args.words,
              "model": args.model.name, "seconds": round(seconds, 1), "load_before": load_before,
              "load_after": os.getloadavg()[0], "rows": [asdict(r) for r in rows]}
    print(f"{args.clients} clients x {args.rounds} rounds: {seconds:.0f} s "
          f"(load average {load_before:.1f} -> {result['load_after']:.1f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
