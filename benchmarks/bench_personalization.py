"""What personalization buys on real personal text, next to presage's learning.

    python -m benchmarks.bench_personalization [--model edgekit/assets/edgekit-en-int8.tflite] [--max-targets 5000]

For each personal corpus (SMS messages; *Persuasion*, a book the base model
never saw), the fixed split ``edgekit.converters.corpus.personal_split``: the first
80% of lines are the user's past text (personalize on it), the last 20% what
they type next (scored, first ``--max-targets`` words). Prints top-1, top-3,
keystroke savings and microseconds per prediction before and after, beside
presage's numbers from ``benchmarks/results/peers.json`` (same split, same
scoring; made by ``python -m benchmarks.peers.presage_peer``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgekit.converters.corpus import personal_split
from edgekit.model import EdgeModel, default_model_path
from edgekit.tokenizer import read_text_lines

ROOT = Path(__file__).resolve().parents[1]
CORPORA = {"sms": ROOT / "data" / "personal" / "sms_ham.txt",
           "persuasion": ROOT / "data" / "heldout" / "austen_persuasion.txt"}
PEERS = ROOT / "benchmarks" / "results" / "peers.json"


def us_per_suggest(model: EdgeModel, lines: list[str], n: int = 300) -> float:
    """Median latency of suggest() on prefixes of the test text (what a keyboard calls)."""
    contexts = [" ".join(ln.split()[: len(ln.split()) // 2]) + " " for ln in lines[:n]]
    times = []
    for c in contexts:
        t = time.perf_counter()
        model.suggest(c)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e6


def run_one(model_path: Path, name: str, path: Path, max_targets: int) -> dict:
    train, test = personal_split(list(read_text_lines(path)))
    with tempfile.TemporaryDirectory() as state:
        m = EdgeModel.load(model_path, state_dir=state)
        before = m.evaluate(test, max_targets=max_targets, progress=True).to_dict()
        before["us_per_prediction"] = us_per_suggest(m, test)
        report = m.personalize(train, progress=True)
        after = m.evaluate(test, max_targets=max_targets, progress=True).to_dict()
        after["us_per_prediction"] = us_per_suggest(m, test)
    return {"train_lines": len(train), "test_lines": len(test), "before": before, "after": after,
            "personalize": report.to_dict()}


def peer_rows(name: str) -> tuple[dict, dict] | None:
    if not PEERS.exists():
        return None
    learning = json.loads(PEERS.read_text()).get("learning", {}).get(name)
    return (learning["before"], learning["after_user_db"]) if learning else None


def print_table(results: dict, max_targets: int) -> None:
    print(f"\nfirst {max_targets} words of each personal-test split; OOV targets are misses")
    print(f"{'':34} {'top1':>6} {'top3':>6} {'KS@3':>6} {'us/pred':>8}")
    for name, r in results.items():
        rows = [(f"{name}: edgekit base", r["before"]), (f"{name}: edgekit personalized", r["after"])]
        peer = peer_rows(name)
        if peer:
            rows += [(f"{name}: presage base", peer[0]), (f"{name}: presage after learning", peer[1])]
        for label, m in rows:
            print(f"{label:34} {m['top1']:6.1%} {m['top3']:6.1%} {m['keystroke_savings']:6.1%} "
                  f"{m['us_per_prediction']:8.0f}")
        gain = r["after"]["top3"] / max(r["before"]["top3"], 1e-9) - 1
        print(f"{name}: top-3 {gain:+.0%} relative; personalization took {r['personalize']['seconds']} s "
              f"on {r['train_lines']} lines\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--max-targets", type=int, default=5000)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "personalization.json")
    args = ap.parse_args()
    results = {name: run_one(args.model, name, path, args.max_targets) for name, path in CORPORA.items()}
    print_table(results, args.max_targets)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": str(args.model), "max_targets": args.max_targets, **results},
                                    indent=1, default=str))


if __name__ == "__main__":
    main()
