"""Device runtime benchmark: latency, SDK overhead, training throughput, memory.

    python -m benchmarks.bench_runtime [--models edgekit/assets] [--keras models/edgekit-en.keras]

For every ``.tflite`` in the folder, in fresh processes: suggest() latency
p50/p95 next to a bare interpreter invoke on the same contexts, per-keystroke
latency and load time, and personalized suggest()'s ratio to the bare invoke
(timed alternately in the process, on the state the first process learned);
in the first process also personalization throughput, suggest() after
personalization, learning two more lines (saved) and then fifty (each with
its phases), and peak RSS. With ``--json``, the
learning figures of the results file it replaces are printed beside the new. For the bundled
(int8) model, three more processes: the terminal keyboard
(``examples/raspberry_pi/keyboard.py``, through a pseudo-terminal, with the
state learned above): two lines typed, then the time from Ctrl-D to its exit
and its peak RSS, and the learning its quit starts in the background until
it reports; and a process that loads the model with that state, suggests
and learns two lines (its peak RSS). Then the float Keras model on the same
contexts (``model(x)`` and ``model.predict``) when TensorFlow is installed,
and the time to ``import edgekit``.

Latency is measured in ``--repeats`` processes per file, in turn with the
other files, and the table shows the quietest (the lowest bare p50) with the
overhead's and the personalized ratio's ranges over all of them. On this VM a
process runs either at the usual pace or about 25% slower throughout, at
random, and the slow kind slows the Python around an invoke more than the
invoke: one process says more about where it landed than about the SDK.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONTEXT_TEXT = ROOT / "data" / "heldout" / "email_easy_ham_2.txt"
PERSONAL_TEXT = ROOT / "data" / "personal" / "sms_ham.txt"
KEYBOARD = ROOT / "examples" / "raspberry_pi" / "keyboard.py"
N_CONTEXTS = 300
# The figures before issue 14's work (README), shown beside the new ones.
PREVIOUS = {
    "int8": {"personalized p50/p95 us": "542/688", "train words/s": 1901, "peak MB": 163, "keyboard quit s": 21},
    "dynamic": {"personalized p50/p95 us": "535/670", "train words/s": 2115, "peak MB": 174},
}
# ... and at the start of the speed work (this machine, the same commands): personalized suggest() against
# the bare invoke in the same process, learning two more lines (then the keyboard's quit), peak RSS.
BEFORE_SPEED_WORK = {"int8": {"personalized / bare invoke": "2.5x (144/57 us)", "train words/s": 3250,
                              "two more lines s": 1.9, "keyboard quit s": "1.9 + exit",
                              "peak MB (load, suggest, learn 1,000 + 2 lines)": 234,
                              "peak MB (load with that state, suggest, learn 2 lines)": 237}}


def pick(rng: np.random.Generator, items: list, size: int | None = None):
    """``rng.choice(items, size)`` (the same draws) without turning ``items`` into a numpy array: the
    email lines as one fixed-width unicode array take 52 MB, which the peak RSS figures would count."""
    if size is None:
        return items[int(rng.integers(0, len(items)))]
    return [items[i] for i in rng.integers(0, len(items), size)]


def contexts(n: int = N_CONTEXTS) -> list[str]:
    """Prefixes of held-out lines, cut after a space: what a user has typed so far."""
    rng = np.random.default_rng(0)
    lines = [ln.strip() for ln in CONTEXT_TEXT.read_text(encoding="utf-8").splitlines() if len(ln.split()) > 4]
    out = []
    for ln in pick(rng, lines, n):
        words = ln.split()
        out.append(" ".join(words[: rng.integers(1, len(words))]) + " ")
    return out


def keystrokes(texts: list[str]) -> list[str]:
    """What the app asks while a user types the next word of each context, key by key."""
    lines = [ln for ln in CONTEXT_TEXT.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rng = np.random.default_rng(1)
    out = []
    for c in texts:
        word = pick(rng, pick(rng, lines).split() or ["the"])
        out += [c + word[:i] for i in range(len(word) + 1)]
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50) * 1e6), float(np.percentile(samples, 95) * 1e6)


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


def paired(first, second, items: list, rounds: int = 3) -> tuple[list[float], list[float]]:
    """Time ``first`` and ``second`` alternately on each item, ``rounds`` times over.

    Both then run under the same machine conditions, so their ratio (the SDK's
    overhead) holds on a busy or noisy machine where two separate loops drift.
    """
    a, b = [], []
    for _ in range(rounds):
        for x, y in items:
            t = time.perf_counter()
            first(x)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            second(y)
            b.append(time.perf_counter() - t)
    return a, b


def bare_and_cold(m) -> tuple[Callable, Callable, list]:
    """What suggest() is timed against: the bare invoke (set_tensor, invoke, get features and logits) on
    a context's ids, ``suggest()`` on its text with the score cache emptied first (a new context each
    call), and the ``(ids, text)`` pairs of ``contexts()``."""
    texts = contexts()
    ids = [m.vocab.context_ids(m.tokenizer.split_partial(c)[0], m.context_length)[None] for c in texts]
    runtime, suggester = m._runtime, m._suggester  # the bare interpreter, and the cache to empty

    def bare_call(x):
        runtime._run(runtime._interp, x)

    def cold_call(c):
        suggester.clear()
        m.suggest(c)

    return bare_call, cold_call, list(zip(ids, texts, strict=True))


def warm_paired(first, second, items: list) -> tuple[list[float], list[float]]:
    """``paired`` after one untimed pass: the steady state (copies made, caches filled) before timing."""
    paired(first, second, items, rounds=1)
    return paired(first, second, items)


def latency(path: Path) -> dict:
    """Load time and suggest() latency of one file, next to the bare invoke; runs in its own process."""
    from edgekit.model import EdgeModel

    t = time.perf_counter()
    m = EdgeModel.load(path, stateless=True, unsigned_local=True)
    load_s = time.perf_counter() - t
    bare_call, sdk_call, pairs = bare_and_cold(m)
    bare, sdk = warm_paired(bare_call, sdk_call, pairs)
    typing = timed(m.suggest, keystrokes([text for _, text in pairs]))
    return {"file": path.name, "quantization": m.quantization, "bytes": path.stat().st_size,
            "load_ms": load_s * 1e3, "bare_us": percentiles(bare), "suggest_us": percentiles(sdk),
            "keystroke_us": percentiles(typing)}


def personalized(path: Path, learned: Path) -> dict:
    """Personalization throughput, suggest() with a personal state, and the process's peak memory;
    for the bundled model also the keyboard's quit and a fresh process that learns a few lines.
    The state learned from the first 1,000 lines is copied to ``learned`` for the other processes."""
    from edgekit.model import EdgeModel
    from edgekit.personal.train import TrainConfig

    state = Path(tempfile.mkdtemp())
    try:
        pm = EdgeModel.load(path, state_dir=state, unsigned_local=True)
        lines = PERSONAL_TEXT.read_text(encoding="utf-8").splitlines()
        t = time.perf_counter()
        report = pm.personalize(lines[:1000], TrainConfig(epochs=2))
        train_s = time.perf_counter() - t
        shutil.copytree(state, learned, dirs_exist_ok=True)
        personal = timed(pm.suggest, contexts())
        ratios = personal_ratios(pm)
        t = time.perf_counter()  # two new lines on top of what was learned (what the keyboard's quit learns)
        quick = pm.personalize(lines[1000:1002], save=True)
        quit_s = time.perf_counter() - t
        t = time.perf_counter()  # fifty more (a day's journal), not saved: the keyboard below starts from the two
        fifty = pm.personalize(lines[1010:1060], save=False)
        fifty_s = time.perf_counter() - t
        out = {"personal_suggest_us": percentiles(personal), **ratios,
               "train_tokens_per_s": (report.train_examples + report.heldout_examples) / train_s,
               "phases_s": report.phases, "two_lines_s": quit_s, "two_lines_phases_s": quick.phases,
               "fifty_lines_s": fifty_s, "fifty_lines_phases_s": fifty.phases,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if path.name == "edgekit-en-int8.tflite":
            out.update(keyboard_quit(path, state, lines[1002:1008]))
            out["learn_few_peak_mb"] = learn_few_peak(path, state, lines[1008:1010])
        return out
    finally:
        shutil.rmtree(state, ignore_errors=True)


def personal_ratios(pm) -> dict:
    """Personalized suggest() against the bare invoke, timed alternately in this process: with the whole
    learned state, and with the trained head's change alone."""
    bare_call, personal_call, pairs = bare_and_cold(pm)
    bare, mine = warm_paired(bare_call, personal_call, pairs)
    head_bare, head_mine = head_alone(pm, lambda: warm_paired(bare_call, personal_call, pairs))
    return {"personal_over_bare": float(np.median(mine) / np.median(bare)),
            "head_alone_over_bare": float(np.median(head_mine) / np.median(head_bare))}


def learned_ratios(path: Path, learned: Path) -> dict:
    """``personal_ratios`` in this process, on a copy of the state the first process learned."""
    from edgekit.model import EdgeModel

    state = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(learned, state, dirs_exist_ok=True)
        return personal_ratios(EdgeModel.load(path, state_dir=state, unsigned_local=True))
    finally:
        shutil.rmtree(state, ignore_errors=True)


def head_alone(pm, timing: Callable[[], tuple[list[float], list[float]]]) -> tuple[list[float], list[float]]:
    """``timing()`` (the bare invoke and personalized suggest() timed alternately) with the trained head's
    change as the whole state (no phrase memory, no personal words): the personal head inside the
    interpreter, nothing merged on the host. The state learned above is put back afterwards."""
    import dataclasses

    from edgekit.personal.phrases import PhraseMemory

    learned = pm.state
    dw, db = learned.contrib_w, learned.contrib_b
    if dw is None or db is None or not (dw.any() or db.any()):
        return [math.nan], [math.nan]
    delta_w = learned.delta_w.copy()
    delta_w.put(dw.ids, dw.values, add=True)
    alone = dataclasses.replace(learned, delta_w=delta_w, delta_b=learned.delta_b + db,
                                phrases=PhraseMemory(learned.phrases.vocab_size, learned.phrases.skip),
                                personal_words={}, phrase_weight=0.0)
    pm._set_state(alone)
    try:
        return timing()
    finally:
        pm._set_state(learned)


def keyboard_quit(path: Path, state: Path, lines: list[str], sessions: int = 3) -> dict:
    """The terminal keyboard on ``state``, ``sessions`` times: type two of ``lines``, then Ctrl-D. The
    median and the longest time from Ctrl-D to its exit (one process exit on a busy machine varies
    more than the quit's own work), its peak RSS, and seconds until the learning the quit started has
    reported, each session after the previous one's report (``{}`` without pexpect)."""
    try:
        import pexpect
    except ImportError:
        return {}
    report = state / "typed.txt.report"
    quits, learned, peaks, text = [], [], [], ""
    for i in range(sessions):
        child = pexpect.spawn(sys.executable, [str(KEYBOARD), "--model", str(path), "--unsigned-local",
                                               "--state-dir", str(state)],
                              encoding="utf-8", dimensions=(24, 200), timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's edgekit
        child.expect(r"\] > \x1b\[K")  # the first draw: the terminal is in cbreak mode (the last report shown)
        for line in lines[2 * i : 2 * i + 2]:
            child.send(line + "\r")
            child.expect("sent: ")
        child.expect(r"\] > \x1b\[K")
        peaks.append(vm_hwm_mb(child.pid))  # its own peak: its address space since exec, all typing done
        t = time.perf_counter()
        child.send("\x04")
        child.expect(pexpect.EOF)
        quits.append(time.perf_counter() - t)
        child.close()
        while not report.exists():
            time.sleep(0.01)
        learned.append(time.perf_counter() - t)
        text = report.read_text(encoding="utf-8")
        if i + 1 < sessions:
            report.unlink()  # as the next start would, once shown
    return {"keyboard_quit_s": float(np.median(quits)), "keyboard_quit_max_s": max(quits),
            "keyboard_learned_s": float(np.median(learned)), "keyboard_peak_mb": max(peaks), "keyboard_report": text}


def vm_hwm_mb(pid: int) -> float:
    """A running process's peak RSS (Linux ``VmHWM``; not ``RUSAGE_CHILDREN``, which would count the
    pages a forked child shares with this process before it runs the keyboard)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmHWM for process {pid}")


def learn_few_peak(path: Path, state: Path, lines: list[str]) -> float:
    """Peak RSS of a fresh process that loads ``path`` with ``state``, suggests, and learns ``lines``."""
    code = ("import json, os, sys\n"  # VmHWM: since exec (ru_maxrss would count the pages of the fork)
            "from benchmarks.bench_runtime import contexts, vm_hwm_mb\n"
            "from edgekit.model import EdgeModel\n"
            "m = EdgeModel.load(sys.argv[1], state_dir=sys.argv[2], unsigned_local=True)\n"
            "[m.suggest(c) for c in contexts()]\n"
            "m.personalize(json.loads(sys.argv[3]), save=False)\n"
            "print(vm_hwm_mb(os.getpid()))\n")
    out = subprocess.check_output([sys.executable, "-c", code, str(path), str(state), json.dumps(lines)], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(out.splitlines()[-1])


def keras_latency(keras_path: Path) -> dict:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from edgekit.tokenizer import Tokenizer
    from edgekit.vocab import Vocabulary

    model = keras.saving.load_model(keras_path, compile=False)
    vocab = Vocabulary((keras_path.parent / "vocab.txt").read_text(encoding="utf-8").splitlines(), 0)
    length = model.input_shape[1]
    ids = [vocab.context_ids(Tokenizer().split_partial(c)[0], length)[None] for c in contexts()]
    for x in ids[:20]:
        model(x)
    return {"call_us": percentiles(timed(lambda x: model(x), ids)),
            "predict_us": percentiles(timed(lambda x: model.predict(x, verbose=0), ids[:100]))}


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import edgekit.model; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], cwd=ROOT)) for _ in range(3)]
    return sorted(runs)[1]


def in_subprocess(path: Path, full: bool, learned: Path) -> dict:
    """One process's measurements of ``path``: latency and the personalized ratios; with ``full`` also
    personalization (learning the state into ``learned``) and memory, else on the state learned there."""
    cmd = [sys.executable, "-m", "benchmarks.bench_runtime", "--one", str(path), "--learned", str(learned)]
    return json.loads(subprocess.check_output(cmd + (["--full"] if full else []), cwd=ROOT).splitlines()[-1])


def overhead(run: dict) -> float:
    """What suggest() adds to the bare invoke, at the median."""
    return run["suggest_us"][0] / run["bare_us"][0] - 1


def quietest(runs: list[dict]) -> dict:
    """The latency run with the fastest bare invoke, and the overhead's and the personalized ratio's
    ranges over all runs."""
    best = min(runs, key=lambda r: r["bare_us"][0])
    keys = ("load_ms", "bare_us", "suggest_us", "keystroke_us", "personal_over_bare", "head_alone_over_bare")
    personal = [r["personal_over_bare"] for r in runs]
    return {**{k: best[k] for k in keys}, "overhead_range": (min(map(overhead, runs)), max(map(overhead, runs))),
            "personal_range": (min(personal), max(personal))}


def recorded(run: dict) -> dict:
    """The personalized figures of an earlier run's results, to print beside this run's."""
    out = {"personalized / bare invoke": f"{run['personal_over_bare']:.2f}x",
           "train words/s": round(run["train_tokens_per_s"]), "two more lines s": round(run["two_lines_s"], 2),
           "peak MB": round(run["peak_rss_mb"])}
    if "fifty_lines_s" in run:
        out["fifty more lines s"] = round(run["fifty_lines_s"], 2)
    if "learn_few_peak_mb" in run:
        out["learn-few process peak MB"] = round(run["learn_few_peak_mb"])
    if "keyboard_learned_s" in run:
        out["keyboard's learning reported after s"] = round(run["keyboard_learned_s"], 2)
    return out


def table(rows: list[dict], keras: dict | None, import_s: float, before: list[dict] | None = None) -> str:
    head = (f"{'file':28} {'MB':>5} {'load ms':>8} {'bare p50/p95 us':>16} {'suggest p50/p95 us':>19} "
            f"{'overhead (all runs)':>19} {'per key p50/p95':>16} {'personal p50/p95':>17} {'train tok/s':>11} {'peak MB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        low, high = r["overhead_range"]
        lines.append(f"{r['file']:28} {r['bytes'] / 1e6:5.2f} {r['load_ms']:8.1f} "
                     f"{r['bare_us'][0]:7.0f}/{r['bare_us'][1]:<8.0f} {r['suggest_us'][0]:8.0f}/{r['suggest_us'][1]:<10.0f} "
                     f"{overhead(r):6.0%} ({low:.0%}..{high:.0%}){'':3} {r['keystroke_us'][0]:7.0f}/{r['keystroke_us'][1]:<8.0f} "
                     f"{r['personal_suggest_us'][0]:7.0f}/{r['personal_suggest_us'][1]:<9.0f} "
                     f"{r['train_tokens_per_s']:11.0f} {r['peak_rss_mb']:8.0f}")
    if keras:
        lines.append(f"{'keras float model(x)':28} {'':5} {'':8} {keras['call_us'][0]:7.0f}/{keras['call_us'][1]:<8.0f}")
        lines.append(f"{'keras float predict()':28} {'':5} {'':8} {keras['predict_us'][0]:7.0f}/{keras['predict_us'][1]:<8.0f}")
    lines.append(f"import edgekit.model: {import_s * 1e3:.0f} ms")
    for r in rows:
        low, high = r.get("personal_range", (math.nan, math.nan))
        lines.append(f"{r['file']}: personalized suggest() / bare invoke, timed alternately in a process (the "
                     f"quietest): {r['personal_over_bare']:.2f}x (the learned state: head, phrase memory, personal "
                     f"words; {low:.2f}x..{high:.2f}x over all runs); "
                     f"{r.get('head_alone_over_bare', math.nan):.2f}x (the trained head's change alone)")
        lines.append(f"{r['file']}: personalize phases (s) {r['phases_s']}; learning two more lines "
                     f"{r['two_lines_s']:.2f} s {r['two_lines_phases_s']} (saved); fifty more "
                     f"{r['fifty_lines_s']:.2f} s {r['fifty_lines_phases_s']}")
        if "keyboard_quit_s" in r:
            lines.append(f"{r['file']}: keyboard (3 sessions of two lines): Ctrl-D to exit {r['keyboard_quit_s']:.2f} s "
                         f"(longest {r['keyboard_quit_max_s']:.2f} s; peak RSS {r['keyboard_peak_mb']:.0f} MB); the "
                         f"learning it starts reported after {r['keyboard_learned_s']:.2f} s; the last: "
                         f"{r['keyboard_report']}")
        if "learn_few_peak_mb" in r:
            lines.append(f"{r['file']}: a process that loads it with that state, suggests and learns two lines: "
                         f"peak RSS {r['learn_few_peak_mb']:.0f} MB")
        last = next((p for p in (before or []) if p.get("file") == r["file"]), None)
        mode = r["file"].removeprefix("edgekit-en-").removesuffix(".tflite")  # the bundled file, whatever its recipe
        for name, previous in (("README before issue 14", PREVIOUS.get(mode)),
                               ("at the start of the speed work", BEFORE_SPEED_WORK.get(mode)),
                               ("the results file this run replaces", last and recorded(last))):
            if previous:
                lines.append(f"{r['file']}: previous ({name}): " + ", ".join(f"{k} {v}" for k, v in previous.items()))
    lines.append("bare: set_tensor + invoke + get_tensor on the same contexts, timed alternately with suggest "
                 "(3 x 300 pairs); suggest: a new context each call; each file's quietest of its runs "
                 "(lowest bare p50); "
                 "per key: typing the next word letter by letter (the context's scores are reused)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "edgekit" / "assets")
    ap.add_argument("--keras", type=Path, default=ROOT / "models" / "edgekit-en.keras")
    ap.add_argument("--repeats", type=int, default=10, help="latency runs per file; the quietest is shown (default: 10)")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--learned", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.one:
        mine = personalized(args.one, args.learned) if args.full else learned_ratios(args.one, args.learned)
        print(json.dumps({**latency(args.one), **mine}))
        return
    files = sorted(args.models.glob("*.tflite"))
    learned = Path(tempfile.mkdtemp())
    try:  # each file's state, learned in its first process, measured again in the others
        runs = [[in_subprocess(p, i == 0, learned / p.stem) for p in files] for i in range(args.repeats)]
    finally:
        shutil.rmtree(learned, ignore_errors=True)
    rows = [{**runs[0][i], **quietest([r[i] for r in runs])} for i in range(len(files))]
    try:
        keras = keras_latency(args.keras) if args.keras.exists() else None
    except ImportError:
        keras = None
    result = {"models": rows, "keras": keras, "import_s": import_seconds()}
    before = json.loads(args.json.read_text())["models"] if args.json and args.json.exists() else None
    print(table(rows, keras, result["import_s"], before))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
