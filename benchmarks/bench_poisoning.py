"""Poisoning and Sybil: what a few hostile update files do to the next model version, per aggregation mode.

    python -m benchmarks.bench_poisoning                       # prints the table, stores it as "latest"
    python -m benchmarks.bench_poisoning --name before --honest 20

The scenario of issue 15 on the bundled model, through the server's real
path (``aggregate_updates`` on HPKE-sealed update files, every check on):

- ``--honest`` devices, each a stretch of the SMS collection (``data/personal``,
  text the base model never saw), personalize with ``EdgeModel.personalize``
  and seal their delta with ``export_update`` (the device recipe: clipped to
  the default clip norm, their true number of examples);
- hostile updates, sealed with edgekit's own ``make_update`` at the clip
  norm, claiming ``DEFAULT_MAX_EXAMPLES`` examples, push "prize" after
  "see you " (a word the base model ranks in the thousands there).
  ``one-row``: the whole norm on the target word's head row, aligned with
  the body's features for that context (the largest rise one update can buy).
  ``spread``: an attacker who knows a per-row bound: the target's row up and
  the base model's most likely words there down, each row at 90% of
  ``SPREAD_ROW`` x clip norm;
- ``10%`` / ``30%``: that share of the round's updates is hostile (2 of 22,
  8 of 28); ``sybil``: 50 updates from one party beside the honest ones;
  ``sybil-enrolled``: the same 50, aggregated with a registry of enrolled
  devices (``devices=``): every device signs with its own key
  (``export_update(device_key=...)``), the attacker's party is one enrolled
  device, so its 50 updates count as one.

For each mode and scenario: the target's rank after "see you " (1 = first
suggestion), its probability, top-3 on an equal share of every honest
device's later text (held out), and how many updates were accepted. The
figures stored in ``--json`` under other names (a run before a change) are
printed beside the new ones. Everything is seeded except HPKE's randomness;
the figures are reproducible to the last digit.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.bench_dp_scale import CachedScorer
from edgekit.federated import (
    DEFAULT_CLIP_NORM,
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_MODE,
    MODES,
    UpdatePolicy,
    aggregate_updates,
    enroll_device,
    export_update,
    generate_keypair,
    key_id,
    load_private_key,
    load_registry,
)
from edgekit.federated.hazmat import make_update
from edgekit.federated.install import apply_delta
from edgekit.flower import partitions as parts
from edgekit.flower.simulate import pooled_heldout
from edgekit.model import EdgeModel, default_model_path
from edgekit.personal.train import softmax
from edgekit.signing import public_pem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "poisoning.json"
CONTEXT, TARGET = "see you ", "prize"
SPREAD_ROW = 0.1  # the spread attacker's row norm, as a share of the clip norm (x 0.9: just inside the bound)
SCENARIOS = {"honest": 0, "10%": 2, "30%": 8, "sybil": 50, "sybil-enrolled": 50}
WITH_REGISTRY = {"sybil-enrolled"}  # scenarios aggregated with a registry of the enrolled devices


def attack_delta(model: EdgeModel, shape: tuple[int, int], kind: str, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """The hostile shared-head delta: rows aligned with the context's features, norm ``clip``."""
    context, _ = model.tokenizer.split_partial(CONTEXT, keep=model.context_length)
    features, logits = model.features_logits(model.vocab.context_ids(context, model.context_length)[None])
    row = np.append(features[0], 1.0).astype(np.float32)  # [dW column; db]: the logit moves by row . [f; 1]
    row /= np.linalg.norm(row)
    m = np.zeros((shape[0] + 1, shape[1]), np.float32)
    target = model.vocab.ids[TARGET]
    if kind == "one-row":
        m[:, target] = clip * row
    else:
        size = 0.9 * SPREAD_ROW * clip
        n_rows = int((clip / size) ** 2)
        scores = np.where(model.vocab.suggestable_mask()[: shape[1]], logits[0][: shape[1]], -np.inf)
        rivals = [i for i in np.argsort(-scores) if i != target][: n_rows - 1]
        m[:, target] = size * row
        m[:, rivals] = -size * row[:, None]
    return m[:-1], m[-1]


class Scorer(CachedScorer):
    """``CachedScorer``'s held-out top-3 of many heads, and the target's rank after the context."""

    def __init__(self, model: EdgeModel, lines: list[str], targets: int) -> None:
        super().__init__(model, lines, targets)
        context, _ = model.tokenizer.split_partial(CONTEXT, keep=model.context_length)
        self.context = model.features_logits(model.vocab.context_ids(context, model.context_length)[None])[0]
        self.mask = model.vocab.suggestable_mask()

    def target(self, head: tuple[np.ndarray, np.ndarray]) -> tuple[int, float]:
        logits = np.where(self.mask, (self.context @ head[0] + head[1])[0], -np.inf)
        p = softmax(logits[None])[0]
        t = self.model.vocab.ids[TARGET]
        return int((logits > logits[t]).sum()) + 1, float(p[t])


def honest_updates(model_path: Path, partitions, public,
                   keys: list[Ed25519PrivateKey]) -> tuple[list[bytes], list[int], list[float]]:
    """One update per partition, each signed by its device's key in ``keys``."""
    updates, examples, top_rows = [], [], []
    for part, key in zip(partitions, keys, strict=True):
        device = EdgeModel.load(model_path, stateless=True, unsigned_local=True)
        device.personalize(list(part.train), save=False)
        dW, db = device.head_delta()
        shared = len(device.vocab) - device.vocab.personal_slots
        rows = np.sqrt((dW[:, :shared].astype(np.float64) ** 2).sum(0) + db[:shared].astype(np.float64) ** 2)
        scale = min(1.0, DEFAULT_CLIP_NORM / float(np.sqrt((rows ** 2).sum())))
        top_rows.append(scale * float(rows.max()) / DEFAULT_CLIP_NORM)
        examples.append(device.n_examples)
        updates.append(export_update(device, public, device_key=key))
    return updates, examples, top_rows


def run(args) -> dict:
    start = time.perf_counter()
    model = EdgeModel.load(args.model, stateless=True, unsigned_local=True)
    shape = (model.metadata["feature_dim"], len(model.vocab) - model.vocab.personal_slots)
    partitions = parts.make_partitions(parts.text_sources(args.data), args.honest, train_words=args.words,
                                       heldout_words=args.words // 5)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-poison-") as tmp:
        key = Path(tmp) / "server.key"
        public = generate_keypair(key, Path(tmp) / "server.key.pub")
        private = load_private_key(key)
        keys = [Ed25519PrivateKey.generate() for _ in partitions]
        sybil = Ed25519PrivateKey.generate()  # the hostile party: one device, as enrolled as any other
        registry = Path(tmp) / "devices.pem"
        for i, key in enumerate([*keys, sybil]):
            (Path(tmp) / f"device{i}.pub").write_bytes(public_pem(key.public_key()))
            enroll_device(Path(tmp) / f"device{i}.pub", registry)
        devices = load_registry(registry)
        honest, examples, top_rows = honest_updates(args.model, partitions, public, keys)
        print(f"{len(honest)} honest devices: {min(examples):,}-{max(examples):,} examples; largest head row "
              f"{100 * min(top_rows):.1f}-{100 * max(top_rows):.1f}% of the clip norm; "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        hostile = {kind: [make_update(*attack_delta(model, shape, kind, DEFAULT_CLIP_NORM), public_key=public,
                                      model_fingerprint=model.fingerprint, n_examples=DEFAULT_MAX_EXAMPLES,
                                      device_key=sybil)
                          for _ in range(max(SCENARIOS.values()))]
                   for kind in ("one-row", "spread")}
        policy = UpdatePolicy(model.fingerprint, shape, key_id(public))
        scorer = Scorer(model, pooled_heldout(partitions, args.targets), args.targets)
        base_rank, _ = scorer.target(model.base_head)
        cells = {}
        for mode in MODES:
            for scenario, n_bad in SCENARIOS.items():
                for kind in (["one-row", "spread"] if n_bad else ["-"]):
                    updates = honest + (hostile[kind][:n_bad] if n_bad else [])
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        result = aggregate_updates(updates, private, policy, mode=mode, workdir=work,
                                                   devices=devices if scenario in WITH_REGISTRY else None)
                    head = apply_delta(model.base_head, result.delta)
                    rank, p = scorer.target(head)
                    cells[f"{mode} {scenario} {kind}"] = {
                        "rank": rank, "p": round(p, 4), "top3": round(scorer.top3(head), 4),
                        "accepted": result.accepted, "updates": len(updates)}
            print(f"{mode}: done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return {"model": Path(args.model).name, "default_mode": DEFAULT_MODE,
            "honest_examples": [min(examples), max(examples)],
            "honest_top_row_share": [round(min(top_rows), 4), round(max(top_rows), 4)],
            "base_rank": base_rank, "base_top3": round(scorer.top3(model.base_head), 4), "cells": cells}


def print_table(new: dict, previous: dict[str, dict]) -> None:
    print(f'"{TARGET}" after "{CONTEXT}": base model rank {new["base_rank"]:,}; held-out top-3 of the base model '
          f'{100 * new["base_top3"]:.1f}%')
    print('rank = the target\'s rank (1 = first suggestion), top-3 = held-out top-3 %, kept = updates accepted')
    names = [*previous, "new"]
    runs = [*previous.items(), ("new", new)]
    print("default mode: " + ", ".join(f"{n} {r.get('default_mode', '?')}" for n, r in runs))
    head = ["mode", "hostile", "attack"] + [f"{n}: rank / p / top-3 / kept" for n in names]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cell, r in new["cells"].items():
        mode, scenario, kind = cell.split(" ")
        figures = [previous[n]["cells"].get(cell) for n in previous] + [r]
        print("| " + " | ".join([mode, scenario, kind] + [_cell(f) for f in figures]) + " |")


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{r['rank']:,} / {r['p']:.2f} / {100 * r['top3']:.1f} / {r['accepted']} of {r['updates']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--honest", type=int, default=20)
    ap.add_argument("--words", type=int, default=2000, help="training words per honest device")
    ap.add_argument("--targets", type=int, default=3000, help="held-out words scored per head")
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "personal")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--name", default="latest", help="store this run under this name in --json")
    args = ap.parse_args()
    stored = json.loads(args.json.read_text()) if args.json.exists() else {}
    new = run(args)
    print_table(new, {n: r for n, r in stored.items() if n != args.name})
    args.json.write_text(json.dumps({**stored, args.name: new}, indent=1) + "\n")


if __name__ == "__main__":
    main()
