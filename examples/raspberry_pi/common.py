"""What the keyboard demo and the nightly job share: model options and the learning report.

Both run on the same device against the same personal state, so they must
load the model the same way (same state folder, same thread budget).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edgekit import EdgeModel, PersonalizeResult

# A Pi 4/5 has four cores: two for the interpreter leave the rest to the desktop or app.
THREADS = 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model file [default: the bundled model]")
    parser.add_argument("--unsigned-local", action="store_true",
                        help="accept a --model file without a signature, one you converted yourself")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="personal state folder [default: $EDGEKIT_STATE_DIR or ~/.local/share/edgekit]")


def load_model(args: argparse.Namespace) -> EdgeModel:
    """The model and the user's state; a bad file or a missing runtime stops with one clear line."""
    try:
        return EdgeModel.load(args.model, state_dir=args.state_dir, num_threads=THREADS,
                              unsigned_local=args.unsigned_local)
    except (ValueError, OSError, RuntimeError) as e:
        raise SystemExit(f"cannot load the model: {e}") from None


def describe(report: PersonalizeResult) -> str:
    """One line a person can judge: did learning help, and by how much on held-out text."""
    before, after = report.before.top3, report.after.top3
    verdict = ("adopted" if report.adopted
               else "kept the previous state (the new one was not better on held-out text)")
    words = report.new_personal_words
    learned = f"; new personal words: {', '.join(words)}" if words else ""
    return (f"held-out top-3 {before:.1%} -> {after:.1%}: {verdict}{learned} "
            f"({report.train_examples} training / {report.heldout_examples} held-out words, "
            f"{report.seconds} s)")
