"""Reproducible training of the bundled default English model (``edgekit train-base``).

Everything that decides the model is in ``TrainConfig`` and in the shipped
``data/`` files, and both are recorded (with file hashes) in
``training.json``, so anyone can retrain the same model. TensorFlow is
imported inside functions only: ``edgekit --help`` imports this module.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import CheckoutFolderMissing, corpus, keras_model, require_checkout
from .keras_model import (
    CELLS,
    MODEL_FILE,
    TRAINING_FILE,
    VOCAB_FILE,
    build_model,
    compile_for_training,
)
from edgekit.vocab import Vocabulary


@dataclass(frozen=True)
class TrainConfig:
    """Sizes and schedule; the defaults are the bundled model (1.45M parameters, Gboard: 1.4M, Hard et al. 2018)."""

    vocab_size: int = 10_000
    personal_slots: int = 64
    context_length: int = 16
    embed_dim: int = 64
    hidden: int = 160
    feature_dim: int = 64
    cell: str = "lstm"
    epochs: int = 3
    batch_size: int = 256
    learning_rate: float = 5e-3
    max_minutes: float = 28.0
    max_examples: int = 0  # 0 = all; a cap keeps tests and throughput probes small
    seed: int = 1234


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_vocab(train_paths: list[Path], config: TrainConfig) -> Vocabulary:
    return Vocabulary.build(corpus.token_lines(train_paths), config.vocab_size, config.personal_slots)


def training_arrays(paths: list[Path], vocab: Vocabulary, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windows of all training text, shuffled once with the seed (then capped)."""
    x, y = corpus.window_arrays(corpus.token_lines(paths), vocab, config.context_length)
    order = np.random.default_rng(config.seed).permutation(len(y))
    if config.max_examples:
        order = order[: config.max_examples]
    return x[order], y[order]


def topk_hits(logits: np.ndarray, targets: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Per scored target: (top-1 hit, top-3 hit), over suggestable words only (design.md).

    ``<s>``/``</s>``/``<num>``/``<pad>`` targets are not scored; an ``<unk>``
    target is scored and always a miss, since the keyboard could not have
    offered the word.
    """
    scored = ~np.isin(targets, [vocab.pad, vocab.bos, vocab.eos, vocab.num])
    logits, targets = logits[scored], targets[scored]
    masked = np.where(vocab.suggestable_mask()[None, :], logits, -np.inf)
    top1 = masked.argmax(axis=1) == targets
    top3 = (np.argpartition(-masked, 3, axis=1)[:, :3] == targets[:, None]).any(axis=1)
    return top1, top3


def topk_accuracy(model, x: np.ndarray, y: np.ndarray, vocab: Vocabulary, chunk: int = 8192) -> dict[str, Any]:
    """Keras top-1/top-3 on windows, in chunks so [N, V] logits never sit in memory at once."""
    top1, top3 = [], []
    for start in range(0, len(y), chunk):
        _, logits = model.predict(x[start : start + chunk], batch_size=1024, verbose=0)
        hits = topk_hits(logits, y[start : start + chunk], vocab)
        top1.append(hits[0])
        top3.append(hits[1])
    t1, t3 = np.concatenate(top1 or [np.zeros(0, bool)]), np.concatenate(top3 or [np.zeros(0, bool)])
    n = len(t1)
    scored = y[~np.isin(y, [vocab.pad, vocab.bos, vocab.eos, vocab.num])]
    return {
        "top1": float(t1.mean()) if n else 0.0,
        "top3": float(t3.mean()) if n else 0.0,
        "scored_targets": n,
        "oov_rate": float((scored == vocab.unk).mean()) if n else 0.0,
    }


def evaluate_heldout(model, vocab: Vocabulary, config: TrainConfig, paths: dict[str, Path]) -> dict:
    """Held-out top-1/top-3 per named file."""
    results = {}
    for name, path in paths.items():
        x, y = corpus.window_arrays(corpus.token_lines([path]), vocab, config.context_length)
        results[name] = topk_accuracy(model, x, y, vocab)
    return results


def _budget_callback(max_minutes: float, batch_size: int, every: int = 200):
    """Prints progress with throughput, and stops at the deadline.

    The run must fit a shared workstation's time budget; the throughput lines
    are how the default sizes were chosen (benchmarks/train_base_notes.md).
    """
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.monotonic()
            self.steps = 0
            self.stopped_early = False

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            elapsed = time.monotonic() - self.start
            if self.steps % every == 0:
                rate = self.steps * batch_size / elapsed
                click.echo(f"step {self.steps}  loss {logs['loss']:.4f}  {elapsed / 60:.1f} min  {rate:.0f} examples/s")
            if elapsed > max_minutes * 60:
                self.stopped_early = True
                self.model.stop_training = True

    return Budget()


def init_head_bias(model, targets: np.ndarray) -> None:
    """Start the head at the (add-one) unigram distribution of the targets.

    Adam moves each bias by about the learning rate per step, so learning 10k
    word frequencies from zero takes thousands of steps; measured on a 100k
    slice, this start cut held-out loss from 6.58 to 5.80 after one pass.
    """
    head = model.get_layer("head")
    counts = np.bincount(targets, minlength=head.units).astype(np.float64) + 1.0
    head.bias.assign(np.log(counts / counts.sum()).astype(np.float32))


def fit(config: TrainConfig, x, y, validation, vocab_len: int):
    """Build, compile and fit; returns ``(model, history dict, stopped_early, seconds)``."""
    import keras

    keras.utils.set_random_seed(config.seed)
    model = build_model(vocab_len, config.context_length, config.embed_dim, config.hidden, config.feature_dim, config.cell)
    steps = config.epochs * -(-len(y) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(steps, 1), alpha=0.05)
    init_head_bias(model, y)
    compile_for_training(model, schedule)
    limit = _budget_callback(config.max_minutes, config.batch_size)
    start = time.monotonic()
    history = model.fit(
        x, {"head": y}, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
        validation_data=(validation[0], {"head": validation[1]}), callbacks=[limit], verbose=2,
    )
    return model, history.history, limit.stopped_early, time.monotonic() - start


def train(config: TrainConfig, out_dir: Path | str | None = None, data_dir: Path | str | None = None) -> dict:
    """Train on ``data/``, write model, vocabulary and ``training.json``; returns the record.

    ``out_dir`` and ``data_dir`` default to the source checkout's ``models/`` and ``data/``.
    """
    data_dir = corpus.data_root(data_dir)
    out_dir = Path(out_dir) if out_dir else require_checkout(keras_model.MODELS_DIR, "out_dir", exists=False)
    train_paths, heldout = corpus.train_files(data_dir), corpus.heldout_files(data_dir)
    vocab = build_vocab(train_paths, config)
    x, y = training_arrays(train_paths, vocab, config)
    vx, vy = corpus.window_arrays(corpus.token_lines([heldout["email"]]), vocab, config.context_length)
    click.echo(f"vocabulary {len(vocab)} ids, {len(y)} training windows, {len(vy)} validation windows")
    model, history, stopped, seconds = fit(config, x, y, (vx[:20_000], vy[:20_000]), len(vocab))
    record = _record(config, vocab, train_paths, heldout, history, stopped, seconds, len(y))
    record["heldout"] = evaluate_heldout(model, vocab, config, heldout)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_inference_model(model, out_dir / MODEL_FILE)
    vocab.save(out_dir / VOCAB_FILE)
    (out_dir / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def save_inference_model(model, path: Path) -> None:
    """Save weights and architecture without the optimizer state (a third of the size).

    A model rebuilt from its config has no optimizer; ``clone_model`` keeps it.
    """
    import keras

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save(path)


def _record(config, vocab, train_paths, heldout, history, stopped, seconds, n_examples) -> dict:
    import keras
    import tensorflow as tf

    epochs_done = len(history.get("loss", []))
    return {
        "config": asdict(config) | {"vocab_ids": len(vocab)},
        "data_sha256": {p.name: sha256_file(p) for p in [*train_paths, *heldout.values()]},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "training_windows": n_examples,
        "epochs_completed": epochs_done,
        "stopped_at_time_limit": stopped,
        "seconds": round(seconds, 1),
        "examples_per_second": round(n_examples * epochs_done / seconds, 1) if seconds and epochs_done else None,
        "train_loss": history["loss"][-1] if epochs_done else None,
        "val_loss_heldout_email_20k": history["val_loss"][-1] if history.get("val_loss") else None,
        "loss_history": {k: [round(float(v), 4) for v in vals] for k, vals in history.items()},
    }
