"""Simulation benchmark: wall time, peak memory and top-3 per round of ``edgekit simulate``.

    python benchmarks/bench_simulate.py                      # 100 clients x 3 rounds, bundled model
    python benchmarks/bench_simulate.py --clients 1000 --fraction 0.02
    python benchmarks/bench_simulate.py --clients 20 --no-secure --model m.tflite

Settings are ``edgekit simulate``'s defaults (SecAgg+, central DP with
adaptive clipping) unless given. Wall time includes the private SuperLink's
and Ray's start (and, where TensorFlow is installed, Flower's Ray workers
importing it: roughly 10-20 s once). Peak memory is the largest sum of the
resident sets of this process and every process it started (SuperLink,
Flower's simulation process, Ray and its workers), sampled every 0.2 s from
``/proc`` (Linux); shared pages count once per process, so it overstates.
On a shared machine the wall time depends on the load; the load average is
recorded next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
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
    ap.add_argument("--fraction", type=float, help="share sampled per round [default: a cohort of 100]")
    ap.add_argument("--secure", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--central-noise-multiplier", type=float)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    partitions = parts.make_partitions(parts.text_sources(args.data), args.clients, train_words=args.words,
                                       heldout_words=args.words // 5)
    fraction = args.fraction or min(1.0, 100 / args.clients)
    config = FederationConfig(model=str(args.model), rounds=args.rounds, secure=args.secure, fraction=fraction,
                              central_noise_multiplier=args.central_noise_multiplier)
    load_before = os.getloadavg()[0]
    peak = PeakRss()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, peak:
        rows = sim.run(config, partitions, tmp, cpus=args.cpus, on_round=sim.RoundTable())
    seconds = time.perf_counter() - start
    result = {"clients": args.clients, "rounds": args.rounds, "fraction": fraction, "secure": config.secure,
              "central_noise_multiplier": config.central_noise_multiplier, "words": args.words,
              "model": args.model.name, "seconds": round(seconds, 1), "peak_rss_mb": round(peak.mb),
              "load_before": load_before, "load_after": os.getloadavg()[0], "rows": [asdict(r) for r in rows]}
    print(f"{args.clients} clients ({fraction:g} sampled per round) x {args.rounds} rounds: {seconds:.0f} s, "
          f"peak RSS {peak.mb:.0f} MB (all processes), load average {load_before:.1f} -> {result['load_after']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


class PeakRss:
    """The largest total resident memory of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.mb = max(self.mb, sum(_rss_kb(pid) for pid in _tree(os.getpid())) / 1024)
            self._stop.wait(self.interval)


def _tree(root: int) -> list[int]:
    """``root`` and every descendant, from the parent ids in ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    main()
