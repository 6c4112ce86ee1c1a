"""Reproducible, resumable training of the bundled default English model (``edgekit train-base``).

Everything that decides the model is in ``TrainConfig`` and in the shipped
``data/`` files, and both are recorded (with file hashes) in
``training.json``, so anyone can retrain the same model. TensorFlow is
imported inside functions only: ``edgekit --help`` imports this module.

Training takes hours on a small machine, so it checkpoints (weights, Adam
state, epoch and step, loss sums) every few minutes, at every epoch end and
when stopped (Ctrl-C, SIGTERM, ``--max-minutes``, ``--max-steps``); rerunning
the same command continues from there and ends with the same weights as an
uninterrupted run. There is no random state to save: the initial weights
come from ``seed`` and each epoch's order from ``(seed, epoch)``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from edgekit.vocab import Vocabulary

from . import corpus, keras_model, require_checkout
from .checkpoint import (
    CHECKPOINT_DIR_NAME,
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    Progress,
    StopSignals,
    duration,
    load_checkpoint,
    save_checkpoint,
)
from .keras_model import (
    MODEL_FILE,
    TRAINING_FILE,
    VOCAB_FILE,
    build_model,
)


@dataclass(frozen=True)
class TrainConfig:
    """What decides the trained weights (run limits and checkpoint paths do not).

    Defaults: the version 2 recipe chosen in benchmarks/train_base_notes.md (GRU:
    the best held-out top-3 of the same-size cells at about 1.4x an LSTM's speed;
    two epochs of 9.9M windows fit the 2.5-hour budget on 2 shared cores).
    """

    vocab_size: int = 10_000
    personal_slots: int = 64
    context_length: int = 16
    embed_dim: int = 64
    hidden: int = 160
    feature_dim: int = 64
    cell: str = "gru"
    epochs: int = 2
    batch_size: int = 256
    learning_rate: float = 5e-3
    sources: tuple[str, ...] = corpus.TRAIN_SOURCES
    valid_windows: int = 50_000  # evenly spaced over the validation splits; 0 = all
    max_examples: int = 0  # 0 = all; a cap keeps tests, sweeps and throughput probes small
    seed: int = 1234


def build_vocab(train_paths: list[Path], config: TrainConfig) -> Vocabulary:
    return Vocabulary.build(corpus.token_lines(train_paths), config.vocab_size, config.personal_slots)


def data_fingerprint(paths: list[Path]) -> dict[str, str]:
    """``split/file -> sha256 of its text``: what a checkpoint and ``training.json`` were made from."""
    return {f"{p.parent.name}/{p.name}": corpus.content_sha256(p) for p in paths}


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


def init_head_bias(model, targets: np.ndarray) -> None:
    """Start the head at the (add-one) unigram distribution of the targets.

    Adam moves each bias by about the learning rate per step, so learning 10k
    word frequencies from zero takes thousands of steps; measured on a 100k
    slice, this start cut held-out loss from 6.58 to 5.80 after one pass.
    """
    head = model.get_layer("head")
    counts = np.bincount(targets, minlength=head.units).astype(np.float64) + 1.0
    head.bias.assign(np.log(counts / counts.sum()).astype(np.float32))


@dataclass
class FitResult:
    """A training run's outcome; ``finished`` is False when it stopped early (checkpoint saved)."""

    model: Any
    history: dict[str, list[float]]  # per completed epoch: "loss" (train mean), "val_loss"
    finished: bool
    stop_reason: str | None
    seconds: float  # training time over all runs of this checkpoint
    steps: int  # optimizer steps done in total
    checkpoint: Path | None = None


def _epoch_size(config: TrainConfig, n: int) -> int:
    return min(n, config.max_examples) if config.max_examples else n


def _epoch_order(config: TrainConfig, n: int, epoch: int) -> np.ndarray:
    """Window indices of one epoch: a fixed subset (``max_examples``) in an order fixed by (seed, epoch)."""
    subset = np.random.default_rng(config.seed).permutation(n)[: config.max_examples] if config.max_examples else None
    size = len(subset) if subset is not None else n
    order = np.random.default_rng([config.seed, epoch]).permutation(size)
    return subset[order] if subset is not None else order


def fit(
    config: TrainConfig,
    train_windows: corpus.Windows,
    valid_windows: corpus.Windows,
    vocab_len: int,
    *,
    checkpoint: Path | None = None,
    fresh: bool = False,
    data: dict[str, str] | None = None,
    checkpoint_minutes: float = 5.0,
    max_minutes: float = 0.0,
    max_steps: int = 0,
    progress_seconds: float = 30.0,
    echo: Callable[[str], None] = click.echo,
) -> FitResult:
    """Train (or continue training) the model; checkpoints to ``checkpoint`` when given.

    A checkpoint from the same ``config`` and ``data`` (file hashes) is
    resumed unless ``fresh``; one from anything else is refused. The run
    stops early, after saving, on Ctrl-C/SIGTERM, after ``max_minutes`` of
    this run or ``max_steps`` steps of this run (0 = no limit).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    model = build_model(vocab_len, config.context_length, config.embed_dim, config.hidden, config.feature_dim,
                        config.cell)
    steps_per_epoch = -(-_epoch_size(config, len(train_windows)) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1), alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule, clipnorm=1.0)
    optimizer.build(model.trainable_variables)
    expect = {"config": _config_dict(config), "data": data or {}}
    if checkpoint is not None and checkpoint.exists() and not fresh:
        progress = load_checkpoint(checkpoint, model, optimizer, expect)
        echo(f"resuming {checkpoint}: epoch {progress.epoch + 1}, step {progress.step:,} of {steps_per_epoch:,}")
    else:
        progress = Progress()
        init_head_bias(model, train_windows.targets)

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    spec = (tf.TensorSpec([None, config.context_length], tf.int32), tf.TensorSpec([None], tf.int32))

    # autograph=False: no Python control flow to convert, and autograph re-reads this file's
    # source when it first traces a function, so a file edited during an hours-long run
    # broke the epoch-end validation trace (NameError) before this.
    @tf.function(input_signature=spec, autograph=False)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            _, logits = model(x, training=True)
            loss_sum = loss_fn(y, logits)
            mean = loss_sum / tf.cast(tf.shape(y)[0], tf.float32)
        grads = tape.gradient(mean, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss_sum

    @tf.function(input_signature=spec, autograph=False)
    def eval_step(x, y):
        return loss_fn(y, model(x, training=False)[1])

    def save(reason: str) -> None:
        progress.seconds = seconds_before + time.monotonic() - run_start
        if checkpoint is not None:
            record = {"format": CHECKPOINT_FORMAT, "saved_because": reason, "progress": asdict(progress)}
            save_checkpoint(checkpoint, model, optimizer, expect | record)

    run_start = last_save = last_print = time.monotonic()
    seconds_before = progress.seconds
    run_steps, stop_reason = 0, None
    with StopSignals() as signals:
        while progress.epoch < config.epochs and stop_reason is None:
            order = _epoch_order(config, len(train_windows), progress.epoch)
            while progress.step < steps_per_epoch:
                start = progress.step * config.batch_size
                x, y = train_windows.take(order[start : start + config.batch_size])
                progress.loss_sum += float(train_step(x, y))
                progress.loss_count += len(y)
                progress.step += 1
                progress.global_step += 1
                run_steps += 1
                now = time.monotonic()
                if now - last_print >= progress_seconds:
                    last_print = now
                    left = (total_steps - progress.global_step) * (now - run_start) / run_steps
                    echo(f"epoch {progress.epoch + 1}/{config.epochs}  step {progress.step:,}/{steps_per_epoch:,}"
                         f"  loss {progress.loss_sum / progress.loss_count:.4f}"
                         f"  {run_steps * config.batch_size / (now - run_start):,.0f} examples/s"
                         f"  elapsed {duration(seconds_before + now - run_start)}  ETA {duration(left)}")
                stop_reason = (signals.received
                               or ("--max-steps" if max_steps and run_steps >= max_steps else None)
                               or ("--max-minutes" if max_minutes and now - run_start >= max_minutes * 60 else None))
                if stop_reason:
                    break
                if checkpoint_minutes and now - last_save >= checkpoint_minutes * 60:
                    last_save = now
                    save("periodic")
            if progress.step == steps_per_epoch:
                val = _mean_loss(eval_step, valid_windows)
                progress.history["loss"].append(progress.loss_sum / max(progress.loss_count, 1))
                progress.history["val_loss"].append(val)
                echo(f"epoch {progress.epoch + 1}/{config.epochs} done: train loss {progress.history['loss'][-1]:.4f}"
                     f"  validation loss {val:.4f}")
                progress.epoch, progress.step, progress.loss_sum, progress.loss_count = progress.epoch + 1, 0, 0.0, 0
                stop_reason = stop_reason if progress.epoch < config.epochs else None
                last_save = time.monotonic()
                save("epoch end")
    if stop_reason:
        save(f"stopped: {stop_reason}")
        where = (f" saved in {checkpoint}; rerun the same command to continue" if checkpoint
                 else " (no checkpoint directory)")
        echo(f"stopped ({stop_reason}) at epoch {progress.epoch + 1}, step {progress.step:,}:{where}")
    progress.seconds = seconds_before + time.monotonic() - run_start
    return FitResult(model, progress.history, stop_reason is None, stop_reason, progress.seconds,
                     progress.global_step, checkpoint)


def _config_dict(config: TrainConfig) -> dict:
    """The config as JSON would give it back (tuples become lists), for comparing with a saved one."""
    return json.loads(json.dumps(asdict(config)))


def _mean_loss(eval_step, windows: corpus.Windows, batch: int = 2048) -> float:
    """Mean cross-entropy (nats) over all windows."""
    total = 0.0
    for start in range(0, len(windows), batch):
        x, y = windows.take(np.arange(start, min(start + batch, len(windows))))
        total += float(eval_step(x, y))
    return total / max(len(windows), 1)


def train(
    config: TrainConfig,
    out_dir: Path | str | None = None,
    data_dir: Path | str | None = None,
    *,
    checkpoint_dir: Path | str | None = None,
    fresh: bool = False,
    max_minutes: float = 0.0,
    max_steps: int = 0,
    checkpoint_minutes: float = 5.0,
    echo: Callable[[str], None] = click.echo,
) -> dict:
    """Train on ``data/`` (resuming a checkpoint), then write model, vocabulary and ``training.json``.

    Returns the record; when the run stopped early the record says so
    (``finished: false``) and nothing but the checkpoint is written.
    """
    data_dir = corpus.data_root(data_dir)
    out_dir = Path(out_dir) if out_dir else require_checkout(keras_model.MODELS_DIR, "out_dir", exists=False)
    train_paths = corpus.train_files(data_dir, config.sources)
    valid_paths = corpus.valid_files(data_dir, config.sources)
    heldout = corpus.heldout_files(data_dir)
    data = data_fingerprint([*train_paths, *valid_paths])
    vocab = build_vocab(train_paths, config)
    windows = corpus.Windows.from_lines(corpus.token_lines(train_paths), vocab, config.context_length)
    valid = corpus.Windows.from_lines(corpus.token_lines(valid_paths), vocab, config.context_length)
    if config.valid_windows and len(valid) > config.valid_windows:
        valid = valid_subset(valid, config.valid_windows)
    echo(f"vocabulary {len(vocab)} ids, {len(windows):,} training windows, {len(valid):,} validation windows")
    checkpoint = Path(checkpoint_dir) if checkpoint_dir else out_dir / CHECKPOINT_DIR_NAME
    result = fit(config, windows, valid, len(vocab), checkpoint=checkpoint / CHECKPOINT_FILE, fresh=fresh, data=data,
                 checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes, max_steps=max_steps, echo=echo)
    record = _record(config, vocab, data, heldout, result, _epoch_size(config, len(windows)))
    if not result.finished:
        return record
    record["heldout"] = evaluate_heldout(result.model, vocab, config, heldout)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_inference_model(result.model, out_dir / MODEL_FILE)
    vocab.save(out_dir / VOCAB_FILE)
    (out_dir / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def valid_subset(windows: corpus.Windows, n: int) -> corpus.Windows:
    """``n`` evenly spaced windows: every source's validation split keeps its share, and the choice is fixed."""
    keep = np.linspace(0, len(windows) - 1, n).astype(np.int64)
    return corpus.Windows(windows.ids, windows.positions[keep], windows.line_starts[keep],
                          windows.context_length, windows.pad)


def save_inference_model(model, path: Path) -> None:
    """Save weights and architecture without the optimizer state (a third of the size).

    A model rebuilt from its config has no optimizer; ``clone_model`` keeps it.
    """
    import keras

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save(path)


def _record(config, vocab, data, heldout, result: FitResult, n_examples: int) -> dict:
    import keras
    import tensorflow as tf

    history = result.history
    epochs_done = len(history["loss"])
    return {
        "config": asdict(config) | {"vocab_ids": len(vocab)},
        "data_sha256": data | {f"heldout/{p.name}": corpus.content_sha256(p) for p in heldout.values()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "training_windows": n_examples,
        "finished": result.finished,
        "stopped_because": result.stop_reason,
        "epochs_completed": epochs_done,
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "examples_per_second": round(result.steps * config.batch_size / result.seconds, 1) if result.seconds else None,
        "train_loss": history["loss"][-1] if epochs_done else None,
        "val_loss": history["val_loss"][-1] if epochs_done else None,
        "loss_history": {k: [round(float(v), 4) for v in vals] for k, vals in history.items()},
    }
