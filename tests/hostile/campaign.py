"""Run hostile model files through edgekit in a child process, so a native crash is a result, not a dead test run.

The child (``python campaign.py --worker ...``) loads each case the way a
keyboard would (``EdgeModel.load``, a next-word suggestion, a completion, a
batch of contexts through the batch interpreter) and prints one JSON line per
case. The parent reads them with a time limit; a child that dies (SIGSEGV,
SIGABRT) or stops answering is recorded against the case it had started, and
a new child goes on from the next case.

    python tests/hostile/campaign.py [--seed 0] [--count 2450]

runs the full campaign and prints the outcomes (a benchmark: minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CASE_SECONDS = 2.0  # each case must load (or be refused) and answer within this much CPU time
HANG_SECONDS = 30.0  # a child silent this long on one case is killed: a hang


@dataclass(frozen=True)
class Outcome:
    index: int
    result: str  # "loaded", "refused" (an EdgekitError), "error" (another exception), "crash", "hang"
    seconds: float  # wall time
    cpu: float  # CPU time of the child on this case: what the case costs, whatever else runs on the machine
    detail: str = ""

    @property
    def clean(self) -> bool:
        return self.result in ("loaded", "refused") and self.cpu <= CASE_SECONDS


def run(indices: list[int], seed: int = 0) -> list[Outcome]:
    """Outcomes of the cases ``indices`` of the campaign with ``seed``, restarting the child after a crash."""
    outcomes: dict[int, Outcome] = {}
    todo = list(indices)
    while todo:
        for outcome in _child(todo, seed):
            outcomes[outcome.index] = outcome
        todo = [i for i in todo if i not in outcomes]
    return [outcomes[i] for i in indices]


def _child(indices: list[int], seed: int):
    """Yield outcomes from one child until it finishes, dies or hangs (the case it was on gets the blame)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGEKIT_STATE_DIR": tempfile.mkdtemp(prefix="edgekit-hostile-")}
    err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks on it
    proc = subprocess.Popen([sys.executable, str(HERE / "campaign.py"), "--worker", f"--seed={seed}",
                             "--indices=" + ",".join(map(str, indices))],
                            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    current, started = None, time.monotonic()
    try:
        while True:
            if not sel.select(timeout=HANG_SECONDS):
                proc.kill()
                wall = time.monotonic() - started
                yield Outcome(current if current is not None else indices[0], "hang", wall, wall)
                return
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "start" in msg:
                current, started = msg["start"], time.monotonic()
            else:
                current = None
                yield Outcome(msg["index"], msg["result"], msg["seconds"], msg["cpu"], msg.get("detail", ""))
        code = proc.wait()
        if current is None and code != 0:  # died between cases: the harness is broken, not a case
            err.seek(0)
            raise RuntimeError(f"campaign child failed (exit {code}): {err.read()[-2000:]}")
        if current is not None:
            err.seek(0)
            tail = err.read()[-300:]
            wall = time.monotonic() - started
            yield Outcome(current, "crash", wall, wall, f"exit {code}: {tail}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sel.close()
        err.close()


def _worker(seed: int, indices: list[int]) -> None:
    """In the child: load each case and say what happened, one JSON line per case."""
    import numpy as np
    from make_cases import case_bytes

    from edgekit import EdgekitError, EdgeModel

    path = Path(tempfile.mkdtemp(prefix="edgekit-case-")) / "case.tflite"
    for i in indices:
        _, data = case_bytes(seed, i)
        path.write_bytes(data)
        print(json.dumps({"start": i}), flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        result, detail = "loaded", ""
        try:
            m = EdgeModel.load(path, stateless=True, unsigned_local=True)
            m.suggest("see you ")
            m.suggest("see you tomo")
            m.features_logits(np.zeros((3, m.context_length), np.int32))
        except EdgekitError as e:
            result, detail = "refused", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - any other exception is the finding
            result, detail = "error", f"{type(e).__name__}: {e}"
        print(json.dumps({"index": i, "result": result, "seconds": round(time.perf_counter() - t0, 3),
                          "cpu": round(time.process_time() - c0, 3), "detail": detail[:300]}), flush=True)


def summary(outcomes: list[Outcome]) -> str:
    counts = Counter(o.result for o in outcomes)
    slow = [o for o in outcomes if o.cpu > CASE_SECONDS]
    worst, wall = max(outcomes, key=lambda o: o.cpu), max(outcomes, key=lambda o: o.seconds)
    lines = [f"{len(outcomes)} cases: " + ", ".join(f"{counts[r]} {r}" for r in
                                                     ("loaded", "refused", "error", "crash", "hang")),
             f"over {CASE_SECONDS:.0f} s of CPU: {len(slow)}; most CPU: case {worst.index}, {worst.cpu:.2f} s; "
             f"longest wall time: case {wall.index}, {wall.seconds:.2f} s"]
    lines += [f"  case {o.index}: {o.result} {o.cpu:.2f} s CPU {o.detail}" for o in outcomes if not o.clean]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=2450)
    ap.add_argument("--indices", help="comma-separated case indices (instead of --count)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    indices = [int(i) for i in args.indices.split(",")] if args.indices else list(range(args.count))
    if args.worker:
        sys.path.insert(0, str(HERE))
        _worker(args.seed, indices)
        return
    t0 = time.perf_counter()
    outcomes = run(indices, args.seed)
    print(summary(outcomes))
    refused = Counter(o.detail.split(":")[0] + ": " + o.detail.split(": ", 2)[-1][:70]
                      for o in outcomes if o.result == "refused")
    print(f"{time.perf_counter() - t0:.0f} s in all; most common refusals:")
    for reason, n in refused.most_common(12):
        print(f"  {n:5d} {reason}")


if __name__ == "__main__":
    main()
