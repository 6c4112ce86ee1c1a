"""A reduced-scale sweep of train-base configurations (benchmarks/train_base_notes.md).

Every configuration trains with ``converters.train_base.fit`` (the code that
trains the shipped model) on the same fixed subset of the version 2 training
windows (``--examples``, one pass), then is scored on the validation splits
(loss) and on evenly spaced windows of each held-out split (loss, top-1,
top-3, out-of-vocabulary share). The text is tokenized once per process.
Each result is appended to ``--results`` as one JSON line and each training
run checkpoints, so a killed sweep rerun with the same arguments skips what
is done and resumes the rest.

    nice -n 19 python -m benchmarks.sweep_train_base --results /tmp/sweep.jsonl \\
        --checkpoints /work/ckpt-base-v2/sweep
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edgekit.converters import corpus
from edgekit.converters.train_base import TrainConfig, fit, topk_hits, valid_subset
from edgekit.vocab import Vocabulary

# name -> changes from TrainConfig's defaults. The int8 file is about one byte a
# parameter, and embedding + head are 2 x vocabulary x 64 of them: 20k words only
# fit the 2 MB bar with smaller embedding/feature sizes.
CONFIGS: dict[str, dict] = {
    "lstm-v10k-64-160-64": {},
    "gru-v10k-64-160-64": {"cell": "gru"},
    "cifg-v10k-64-160-64": {"cell": "cifg"},
    "lstm-v10k-64-256-64": {"hidden": 256},
    "lstm-v15k-48-160-48": {"vocab_size": 15_000, "embed_dim": 48, "feature_dim": 48},
    "lstm-v20k-64-160-64": {"vocab_size": 20_000},
}
OOV_VOCAB_SIZES = (10_000, 15_000, 20_000, 30_000)


def parameters(config: TrainConfig, vocab_ids: int) -> int:
    """Trainable parameters of ``build_model`` with these sizes (gates: LSTM 4, CIFG 3, GRU 3 with two biases)."""
    e, h, f = config.embed_dim, config.hidden, config.feature_dim
    recurrent = {"lstm": 4 * (h * (e + h) + h), "cifg": 3 * (h * (e + h) + h), "gru": 3 * (h * (e + h) + 2 * h)}[config.cell]
    return vocab_ids * e + recurrent + (h * f + f) + (f * vocab_ids + vocab_ids)


def score(model, windows: corpus.Windows, vocab: Vocabulary, n: int) -> dict:
    """Loss (nats), top-1, top-3 and OOV share over ``n`` evenly spaced windows."""
    if len(windows) > n:
        windows = valid_subset(windows, n)
    x, y = windows.take(np.arange(len(windows)))
    _, logits = model.predict(x, batch_size=1024, verbose=0)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean())
    top1, top3 = topk_hits(logits, y, vocab)
    return {"loss": round(loss, 4), "top1": round(float(top1.mean()), 4), "top3": round(float(top3.mean()), 4),
            "oov": _oov(y, vocab), "targets": int(len(top1))}


def _oov(targets: np.ndarray, vocab: Vocabulary) -> float:
    """Share of scored targets (words: not ``</s>``/``<num>``) that are ``<unk>``: misses whatever the model."""
    scored = targets[~np.isin(targets, [vocab.pad, vocab.bos, vocab.eos, vocab.num])]
    return round(float((scored == vocab.unk).mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True, help="JSON lines, appended")
    ap.add_argument("--checkpoints", type=Path, required=True, help="one checkpoint per configuration")
    ap.add_argument("--examples", type=int, default=800_000, help="training windows per configuration (one pass)")
    ap.add_argument("--eval-windows", type=int, default=10_000, help="windows scored per held-out split")
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--table", action="store_true", help="print the results as a Markdown table and exit")
    args = ap.parse_args()
    if args.table:
        print(markdown_table([json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]))
        return

    done = set()
    if args.results.exists():
        done = {json.loads(line)["name"] for line in args.results.read_text().splitlines() if line.strip()}
    names = [n for n in (args.only.split(",") if args.only else CONFIGS) if n not in done]
    base = TrainConfig(epochs=1, max_examples=args.examples)
    t0 = time.monotonic()
    train_lines = list(corpus.token_lines(corpus.train_files(sources=base.sources)))
    valid_lines = list(corpus.token_lines(corpus.valid_files(sources=base.sources)))
    heldout = {k: list(corpus.token_lines([p])) for k, p in corpus.heldout_files().items()}
    print(f"tokenized in {time.monotonic() - t0:.0f} s", flush=True)

    vocabs: dict[int, Vocabulary] = {}

    def vocab_of(size: int) -> Vocabulary:
        if size not in vocabs:
            vocabs[size] = Vocabulary.build(train_lines, size, base.personal_slots)
        return vocabs[size]

    if "oov" not in done:
        oov = {}
        for size in OOV_VOCAB_SIZES:
            vocab = vocab_of(size)
            oov[size] = {k: _oov(corpus.Windows.from_lines(lines, vocab, 1).targets, vocab) for k, lines in heldout.items()}
        _append(args.results, {"name": "oov", "unk_share_of_targets": oov})
        print(json.dumps(oov), flush=True)

    for name in names:
        config = replace(base, **CONFIGS[name])
        vocab = vocab_of(config.vocab_size)
        windows = corpus.Windows.from_lines(train_lines, vocab, config.context_length)
        valid = valid_subset(corpus.Windows.from_lines(valid_lines, vocab, config.context_length), config.valid_windows)
        result = fit(config, windows, valid, len(vocab), checkpoint=args.checkpoints / f"{name}.npz",
                     checkpoint_minutes=3.0, progress_seconds=60.0, echo=lambda line: print(f"[{name}] {line}", flush=True))
        if not result.finished:
            return
        tests = {k: score(result.model, corpus.Windows.from_lines(lines, vocab, config.context_length), vocab,
                          args.eval_windows) for k, lines in heldout.items()}
        chat = [k for k in tests if k not in ("email", "persuasion")]
        _append(args.results, {
            "name": name, "config": asdict(config), "vocab_ids": len(vocab), "parameters": parameters(config, len(vocab)),
            "train_seconds": round(result.seconds, 1), "examples_per_second": round(result.steps * config.batch_size / result.seconds),
            "train_loss": round(result.history["loss"][-1], 4), "val_loss": round(result.history["val_loss"][-1], 4),
            "chat_mean_top3": round(float(np.mean([tests[k]["top3"] for k in chat])), 4),
            "chat_mean_top1": round(float(np.mean([tests[k]["top1"] for k in chat])), 4),
            "heldout": tests,
        })
        print(f"[{name}] val {result.history['val_loss'][-1]:.4f}  chat top-3 "
              f"{np.mean([tests[k]['top3'] for k in chat]):.4f}", flush=True)


CHAT_COMMENT = ("self_dialogue", "irc_ubuntu_linux", "topical_chat", "goemotions_reddit")  # the most keyboard-like


def markdown_table(records: list[dict]) -> str:
    """One row per configuration: size, time, validation loss, top-3 means and per held-out set."""
    rows = [r for r in records if r["name"] != "oov"]
    sets = list(rows[0]["heldout"]) if rows else []
    head = ["config", "params", "train s", "examples/s", "val loss",
            "chat/comment top-1 / top-3", "all 8 chat-like top-3", *sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        h = r["heldout"]
        chat1 = np.mean([h[k]["top1"] for k in CHAT_COMMENT])
        chat3 = np.mean([h[k]["top3"] for k in CHAT_COMMENT])
        cells = [r["name"], f"{r['parameters'] / 1e6:.2f}M", f"{r['train_seconds']:.0f}",
                 f"{r['examples_per_second']:,}", f"{r['val_loss']:.3f}", f"{chat1:.1%} / {chat3:.1%}",
                 f"{r['chat_mean_top3']:.1%}", *(f"{h[k]['top3']:.1%}" for k in sets)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
