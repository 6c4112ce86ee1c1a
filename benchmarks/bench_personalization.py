"""What personalization buys on real personal text, next to presage's learning.

    python -m benchmarks.bench_personalization [--model edgekit/assets/edgekit-en-int8.tflite] [--max-targets 5000]
        [--dialogue data/heldout/taskmaster4.txt.xz]

For each personal corpus (SMS messages; *Persuasion*, a book the base model
never saw; with ``--dialogue``, a repetitive user: the customer's turns of
a dialogue corpus, e.g. Taskmaster-4's test split, which no version of the
base model trained on; customers there repeat their orders word for word),
the fixed split ``edgekit.converters.corpus.personal_split``: the first
80% of lines are the user's past text (personalize on it), the last 20% what
they type next (scored, first ``--max-targets`` words). Prints top-1, top-3,
keystroke savings and microseconds per prediction before and after, beside
presage's numbers from ``benchmarks/results/peers.json`` (same split, same
scoring; made by ``python -m benchmarks.peers.presage_peer``); then top-3 on
the test lines that do not occur in the training part ("new lines": what
personalization must never make worse), and, after learning SMS, top-3 on
another domain's text (*Persuasion*'s test part) before and after.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgekit.converters.corpus import personal_split
from edgekit.model import EdgeModel, default_model_path
from edgekit.personal.train import TrainConfig
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


def dialogue_user(path: Path, n: int = 3000) -> list[str]:
    """The customer's turns (the first of each pair) of a dialogue file, dialogues split by blank lines."""
    dialogues = [d.splitlines() for d in "".join(read_text_lines(path)).split("\n\n") if d.strip()]
    return [ln.strip() for d in dialogues for i, ln in enumerate(d) if i % 2 == 0 and ln.strip()][:n]


def run_one(model_path: Path, name: str, lines: list[str], max_targets: int, other: list[str] | None = None,
            slack: float | None = TrainConfig.other_text_slack) -> dict:
    """Before/after on the test part, on its new lines, and (``other``) on another domain's text."""
    train, test = personal_split(lines)
    seen = set(train)
    new = [ln for ln in test if ln not in seen]
    with tempfile.TemporaryDirectory() as state:
        m = EdgeModel.load(model_path, state_dir=state, unsigned_local=True)
        def measure() -> dict:
            out = m.evaluate(test, max_targets=max_targets, progress=True).to_dict()
            out["us_per_prediction"] = us_per_suggest(m, test)
            out["new_lines_top3"] = m.evaluate(new, max_targets=max_targets).top3
            if other is not None:
                out["other_domain_top3"] = m.evaluate(other, max_targets=max_targets).top3
            return out

        before = measure()
        report = m.personalize(train, TrainConfig(other_text_slack=slack), progress=True)
        after = measure()
    return {"train_lines": len(train), "test_lines": len(test), "new_test_lines": len(new), "before": before,
            "after": after, "personalize": report.to_dict()}


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
              f"on {r['train_lines']} lines")
        b, a = r["before"], r["after"]
        print(f"{name}: new lines ({r['new_test_lines']} of {r['test_lines']} test lines not in the training part): "
              f"top-3 {b['new_lines_top3']:.1%} -> {a['new_lines_top3']:.1%}")
        if "other_domain_top3" in b:
            print(f"{name}: another domain (Persuasion's test part): top-3 {b['other_domain_top3']:.1%} -> "
                  f"{a['other_domain_top3']:.1%}")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--max-targets", type=int, default=5000)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "personalization.json")
    ap.add_argument("--dialogue", type=Path, help="a dialogue corpus (blank lines between dialogues): adds a "
                    "repetitive user, its customer turns")
    ap.add_argument("--no-other-text-bound", action="store_true",
                    help="personalize with TrainConfig(other_text_slack=None): no bound on anchor text")
    ap.add_argument("--only", choices=[*CORPORA, "dialogue"], action="append", help="run only these corpora")
    args = ap.parse_args()
    corpora = {name: list(read_text_lines(path)) for name, path in CORPORA.items()}
    if args.dialogue:
        corpora["dialogue"] = dialogue_user(args.dialogue)
    prose = personal_split(corpora["persuasion"])[1]
    slack = None if args.no_other_text_bound else TrainConfig.other_text_slack
    results = {name: run_one(args.model, name, lines, args.max_targets, prose if name == "sms" else None, slack)
               for name, lines in corpora.items() if not args.only or name in args.only}
    print_table(results, args.max_targets)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": str(args.model), "max_targets": args.max_targets, **results},
                                    indent=1, default=str))


if __name__ == "__main__":
    main()
