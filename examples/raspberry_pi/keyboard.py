"""A predictive keyboard in the terminal of a Raspberry Pi (or any device).

    python keyboard.py [--model edgekit-en-int8.tflite] [--journal ~/typed.txt]

Type a message: after every line you see the three suggestions the app would
show; end the line to "send" it. Sent messages go to a local journal file
(never uploaded) that `learn` uses to personalize, e.g. nightly from cron:

    python keyboard.py --learn
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edgekit import EdgeModel

JOURNAL = Path.home() / ".local" / "share" / "edgekit" / "typed.txt"


def chat(model: EdgeModel, journal: Path) -> None:
    print(f"model {model.info()['name']} ({model.quantization}, {model.runtime}); empty line quits")
    print("end a line with '?' to see suggestions for it instead of sending it")
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line:
            break
        if line.endswith("?"):
            text = line[:-1]
            shown = "  ".join(f"{s.word} ({s.probability:.0%})" for s in model.suggest(text))
            print(f"  [{shown or 'no suggestion'}]")
            continue
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(journal, "a", encoding="utf-8") as f:  # append-only: nothing lost on a crash
            f.write(line + "\n")


def learn(model: EdgeModel, journal: Path) -> None:
    if not journal.exists():
        print(f"nothing typed yet ({journal} missing)")
        return
    r = model.personalize(journal, progress=True)
    print(f"held-out top-3 {r['before']['top3']:.1%} -> {r['after']['top3']:.1%}"
          f" ({'adopted' if r['adopted'] else 'kept previous state'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model file [default: bundled]")
    ap.add_argument("--journal", type=Path, default=JOURNAL)
    ap.add_argument("--learn", action="store_true", help="personalize on the journal and exit")
    args = ap.parse_args()
    model = EdgeModel.load(args.model, num_threads=2)  # a Pi 4/5 has 4 cores; leave some for the app
    (learn if args.learn else chat)(model, args.journal)


if __name__ == "__main__":
    main()
