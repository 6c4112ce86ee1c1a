"""What central DP costs at realistic cohorts: global top-3 after one round, by cohort size and epsilon.

    python benchmarks/bench_dp_scale.py                          # cohorts 100, 1,000, 10,000; eps 1, 3, 10
    python benchmarks/bench_dp_scale.py --cohorts 100 1000 --epsilons 3 --json dp.json

One round of the Flower deployment's arithmetic (``edgekit.flower``), on
the bundled model and the SMS collection (``data/personal``, text the base
model never saw):

1. ``--writers`` real devices, each a stretch of the SMS collection
   (``partitions.make_partitions``), train the global head on their text as a
   round does (``local.train_head_locally``, the FederationConfig defaults:
   2 epochs at 3e-3) and clip their shared-head delta to ``--clip``.
2. A cohort of n devices is simulated honestly by resampling those real
   deltas with replacement: its mean is ``sum(count_i * delta_i) / n`` with
   multinomial counts, exactly what n devices sending those deltas give.
3. Central DP adds N(0, (z C / n)^2) to each coordinate of the mean
   (``add_central_noise``), with z the smallest noise multiplier whose
   epsilon (``privacy.dp_epsilon``, RDP) for this one round is at most the
   target at ``--delta``, without sampling amplification (as if the cohort
   were the whole population: the conservative reading). The noise's size
   relative to the signal falls as 1/n: that is the whole story of the table.
4. The new head is scored on an equal share of every writer's held-out text
   (``local.head_scores``; features computed once).

Noise is drawn from a fixed seed per cell so that the table is reproducible;
a device or server never uses a fixed seed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.blas import blas_threads  # noqa: E402
from edgekit.federated.hazmat import add_central_noise, clip_delta, shared_delta  # noqa: E402
from edgekit.federated.install import apply_delta  # noqa: E402
from edgekit.federated.privacy import dp_epsilon  # noqa: E402
from edgekit.flower import partitions as parts  # noqa: E402
from edgekit.flower.local import train_head_locally  # noqa: E402
from edgekit.flower.settings import FederationConfig  # noqa: E402
from edgekit.flower.simulate import pooled_heldout  # noqa: E402
from edgekit.metrics import evaluate  # noqa: E402
from edgekit.model import EdgeModel, default_model_path  # noqa: E402
from edgekit.personal.train import TrainConfig, softmax  # noqa: E402


def noise_for_epsilon(epsilon: float, delta: float, sampling_rate: float = 1.0) -> float:
    """The smallest noise multiplier (to 0.1%) whose one-round epsilon at ``delta`` is <= ``epsilon``."""
    lo, hi = 0.05, 100.0
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        if dp_epsilon(mid, sampling_rate=sampling_rate, delta=delta).epsilon > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


class CachedScorer:
    """Top-3 of many heads on one text: the body's features are computed once, then only ``F @ W + b``."""

    def __init__(self, model: EdgeModel, lines: list[str], targets: int) -> None:
        self.model, self.lines, self.targets = model, lines, targets
        self.cache: dict[bytes, np.ndarray] = {}

    def top3(self, head: tuple[np.ndarray, np.ndarray]) -> float:
        def scorer(ids: np.ndarray) -> np.ndarray:
            key = ids.tobytes()
            if key not in self.cache:
                self.cache[key] = self.model.features_logits(ids)[0]
            with blas_threads(1):
                return softmax(self.cache[key] @ head[0] + head[1])

        m = self.model
        return evaluate(scorer, m.vocab, m.tokenizer.iter_lines(self.lines), m.context_length,
                        max_targets=self.targets).top3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohorts", type=int, nargs="+", default=[100, 1000, 10_000])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    ap.add_argument("--delta", type=float, default=1e-10)
    ap.add_argument("--writers", type=int, default=24, help="real devices whose deltas are resampled")
    ap.add_argument("--words", type=int, default=1500)
    ap.add_argument("--clip", type=float, default=FederationConfig.clip_norm)
    ap.add_argument("--targets", type=int, default=4000, help="held-out words scored per head")
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "personal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    start = time.perf_counter()
    model = EdgeModel.load(args.model, stateless=True, unsigned_local=True)
    partitions = parts.make_partitions(parts.text_sources(args.data), args.writers, train_words=args.words,
                                       heldout_words=args.words // 5)
    defaults = FederationConfig()
    local = TrainConfig(epochs=defaults.epochs, min_steps=defaults.min_steps, learning_rate=defaults.learning_rate)
    w0, b0 = model.base_head
    deltas, norms = [], []
    for part in partitions:
        head, _ = train_head_locally(model, list(part.train), local)
        dW, db = shared_delta(head[0] - w0, head[1] - b0, len(model.vocab), model.vocab.personal_slots)
        norms.append(float(np.sqrt((dW.astype(np.float64) ** 2).sum() + (db.astype(np.float64) ** 2).sum())))
        deltas.append(clip_delta(dW, db, args.clip))
    print(f"{len(deltas)} real deltas, norms {min(norms):.1f}-{max(norms):.1f} (median {np.median(norms):.1f}), "
          f"clipped to {args.clip:g}; {time.perf_counter() - start:.0f} s", file=sys.stderr)

    scorer = CachedScorer(model, pooled_heldout(partitions, args.targets), args.targets)
    base = scorer.top3(model.base_head)
    rng = np.random.default_rng(args.seed)
    zs = {eps: noise_for_epsilon(eps, args.delta) for eps in args.epsilons}
    rows = []
    for n in args.cohorts:
        counts = rng.multinomial(n, np.full(len(deltas), 1 / len(deltas)))
        mean = (sum(c * d[0] for c, d in zip(counts, deltas, strict=True)) / n,
                sum(c * d[1] for c, d in zip(counts, deltas, strict=True)) / n)
        row = {"cohort": n, "no_dp": scorer.top3(apply_delta(model.base_head, mean))}
        for eps, z in zs.items():
            noisy = add_central_noise(mean, args.clip, z, n, rng=np.random.default_rng([args.seed, n, int(eps * 100)]))
            row[f"eps_{eps:g}"] = scorer.top3(apply_delta(model.base_head, noisy))
        rows.append(row)
        print(f"cohort {n}: done, {time.perf_counter() - start:.0f} s", file=sys.stderr)

    header = ["devices per round", "no DP"] + [f"eps {e:g} (z {zs[e]:.2f})" for e in args.epsilons]
    print(f"base model top-3: {100 * base:.2f}%  (delta {args.delta:g}, clip {args.clip:g}, one round)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{row['cohort']:,}", _pct(row["no_dp"], base)] + [_pct(row[f"eps_{e:g}"], base)
                                                                     for e in args.epsilons]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"base_top3": base, "delta": args.delta, "clip": args.clip,
                                         "noise_multipliers": {str(e): z for e, z in zs.items()},
                                         "writers": len(deltas), "delta_norms": norms, "rows": rows}, indent=1) + "\n")


def _pct(top3: float, base: float) -> str:
    return f"{100 * top3:.2f}% ({100 * (top3 - base):+.2f})"


if __name__ == "__main__":
    main()
