"""Give simulated devices their own text: one writer per device, never base-training text.

    python -m examples.device_texts --devices 10 --out out/devices

Sources are the shipped text the default model was NOT trained on: the SMS
messages, the later (held-out) email, and *Persuasion*. Each device folder
gets ``train.txt`` (what it learns from) and ``heldout.txt`` (what that
writer typed next); ``--union`` also writes every device's held-out text in
one file, the yardstick for the global model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.flower.partitions import make_partitions, text_sources, write_partitions

DATA = Path(__file__).resolve().parents[1] / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--words", type=int, default=2500, help="training words per device")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--union", type=Path, default=None, help="write all held-out lines here")
    ap.add_argument("--sources", default="sms_ham,email_easy_ham_2,austen_persuasion",
                    help="comma-separated corpora to draw writers from")
    args = ap.parse_args()
    wanted = {f"{name}.txt" for name in args.sources.split(",")}
    sources = {k: v for k, v in {**text_sources(DATA / "personal"), **text_sources(DATA / "heldout")}.items()
               if k in wanted}
    if not sources:
        raise SystemExit(f"no corpus matches --sources {args.sources}")
    parts = make_partitions(sources, args.devices, train_words=args.words, heldout_words=args.words // 4)
    folders = write_partitions(parts, args.out)
    if args.union:
        args.union.write_text("".join(line + "\n" for p in parts for line in p.heldout), encoding="utf-8")
    print(f"{len(folders)} devices in {args.out}: " + ", ".join(sorted({p.name.split('@')[0] for p in parts})))


if __name__ == "__main__":
    main()
