"""The Keras model contract, a tiny training run, and the train-base outputs."""
from __future__ import annotations

import json
import lzma

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edgekit.converters import corpus  # noqa: E402
from edgekit.converters.keras_model import build_model, compile_for_training, load_base_model  # noqa: E402
from edgekit.converters.train_base import CHECKPOINT_DIR_NAME, TrainConfig, fit, topk_hits, train  # noqa: E402
from edgekit.tokenizer import Tokenizer  # noqa: E402
from edgekit.vocab import Vocabulary  # noqa: E402

V, L = 40, 6


@pytest.mark.parametrize("cell", ["lstm", "gru", "cifg"])
def test_build_model_contract(cell):
    model = build_model(V, context_length=L, embed_dim=4, hidden=8, feature_dim=5, cell=cell)
    assert model.inputs[0].shape == (None, L) and model.inputs[0].dtype == "int32"
    assert model.input.name == "tokens"
    recurrent = model.get_layer(cell)
    assert recurrent.unroll is True
    head = model.get_layer("head")
    assert head.activation.__name__ == "linear" and head.kernel.shape == (5, V)
    assert model.get_layer("features").output.shape == (None, 5)
    features, logits = model(np.zeros((3, L), np.int32))
    assert features.shape == (3, 5) and logits.shape == (3, V)


def test_cifg_has_three_gates_saves_and_loads(tmp_path):
    model = build_model(V, context_length=L, embed_dim=4, hidden=8, feature_dim=5, cell="cifg")
    assert model.get_layer("cifg").count_params() == 3 * (8 * (4 + 8) + 8)
    x = np.arange(2 * L, dtype=np.int32).reshape(2, L) % V
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert np.allclose(loaded(x)[1], model(x)[1])


def test_build_model_rejects_unknown_cell():
    with pytest.raises(ValueError, match="lstm"):
        build_model(V, cell="rnn")


def test_tiny_training_lowers_loss():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(5, V, size=(256, L)).astype(np.int32)
    y = (x[:, -1] + 1) % V  # next id follows the last one: learnable
    model = build_model(V, context_length=L, embed_dim=8, hidden=16, feature_dim=8)
    compile_for_training(model, 1e-2)
    history = model.fit(x, {"head": y}, batch_size=32, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]


def test_topk_scores_words_only_and_counts_unk_as_miss():
    vocab = Vocabulary(["<pad>", "<unk>", "<s>", "</s>", "<num>", "a", "b", "<personal_0>"], personal_slots=1)
    logits = np.zeros((4, 8), np.float32)
    logits[:, 7] = 9  # a personal slot and specials are never suggested
    logits[:, 1] = 8
    logits[:, 5] = 5
    targets = np.array([5, 6, 1, 3])  # hit, miss at top-1, <unk> miss, </s> unscored
    top1, top3 = topk_hits(logits, targets, vocab)
    assert top1.tolist() == [True, False, False] and top3.tolist() == [True, True, False]


TINY = dict(vocab_size=20, personal_slots=2, context_length=L, embed_dim=4, hidden=8, feature_dim=4, batch_size=64,
            sources=("email_easy_ham_1", "self_dialogue"))


def _tiny_data(root):
    text = "the cat sat on the mat. the dog sat on the rug.\nsee you at the cafe at noon\n" * 20
    for path in [*corpus.train_files(root, TINY["sources"]), *corpus.valid_files(root, TINY["sources"]),
                 *corpus.heldout_files(root).values()]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(text.encode()) if path.suffix == ".xz" else text.encode())
    return root


def test_train_writes_a_loadable_model(tmp_path):
    config = TrainConfig(epochs=2, **TINY)
    record = train(config, tmp_path / "out", _tiny_data(tmp_path / "data"), echo=lambda line: None)
    assert record["finished"] and record["loss_history"]["loss"][-1] < record["loss_history"]["loss"][0]
    assert set(record["heldout"]) == set(corpus.heldout_files())
    model, vocab, cfg = load_base_model(tmp_path / "out")
    assert len(vocab) == model.get_layer("head").units and cfg["context_length"] == L
    saved = json.loads((tmp_path / "out" / "training.json").read_text())
    assert len(saved["data_sha256"]) == 2 * len(TINY["sources"]) + len(corpus.heldout_files())
    assert (tmp_path / "out" / CHECKPOINT_DIR_NAME / "checkpoint.npz").is_file()


def _windows(seed, n_lines=40):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(V)]
    lines = list(Tokenizer().iter_lines(" ".join(rng.choice(words, rng.integers(2, 12))) for _ in range(n_lines)))
    vocab = Vocabulary.build(lines, V - 7, personal_slots=2)
    return corpus.Windows.from_lines(lines, vocab, L), len(vocab)


def test_same_seed_same_weights():
    windows, v = _windows(1)
    config = TrainConfig(context_length=L, embed_dim=4, hidden=8, feature_dim=4, batch_size=32, epochs=1)
    runs = [fit(config, windows, windows, v, echo=lambda line: None).model.get_weights() for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("stops", [[3], [4, 5]])  # inside the first epoch; twice, across an epoch end
def test_resumed_training_equals_an_uninterrupted_run(tmp_path, stops):
    """Stopped after N steps and resumed (from a fresh model object), training ends with identical weights."""
    windows, v = _windows(2)
    valid, _ = _windows(3, 10)
    config = TrainConfig(context_length=L, embed_dim=4, hidden=8, feature_dim=4, batch_size=32, epochs=2,
                         max_examples=200)  # 7 steps an epoch
    quiet = dict(echo=lambda line: None, data={"train": "x"})
    whole = fit(config, windows, valid, v, checkpoint=tmp_path / "whole.npz", **quiet)
    ckpt = tmp_path / "parts.npz"
    for n in stops:
        part = fit(config, windows, valid, v, checkpoint=ckpt, max_steps=n, **quiet)
        assert not part.finished and part.stop_reason == "--max-steps"
    last = fit(config, windows, valid, v, checkpoint=ckpt, **quiet)
    assert last.finished and last.steps == whole.steps == 14
    assert last.history == whole.history and len(last.history["val_loss"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(last.model.get_weights(), whole.model.get_weights()))
    again = fit(config, windows, valid, v, checkpoint=ckpt, **quiet)  # finished: nothing left to do
    assert again.steps == 14 and all(np.array_equal(a, b) for a, b in zip(again.model.get_weights(), whole.model.get_weights()))


def test_checkpoint_of_another_config_is_refused(tmp_path):
    import click

    windows, v = _windows(4)
    config = TrainConfig(context_length=L, embed_dim=4, hidden=8, feature_dim=4, batch_size=32, epochs=1)
    fit(config, windows, windows, v, checkpoint=tmp_path / "c.npz", max_steps=1, echo=lambda line: None)
    with pytest.raises(click.UsageError, match="hidden.*--fresh"):
        fit(TrainConfig(**{**config.__dict__, "hidden": 6}), windows, windows, v, checkpoint=tmp_path / "c.npz",
            echo=lambda line: None)
    fresh = fit(TrainConfig(**{**config.__dict__, "hidden": 6}), windows, windows, v, checkpoint=tmp_path / "c.npz",
                fresh=True, echo=lambda line: None)
    assert fresh.finished


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_finishes_the_same_model(tmp_path):
    """The real path: a train-base process gets SIGINT mid-run, exits 130 with a checkpoint; resuming
    it ends with the weights of a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys

    data = _tiny_data(tmp_path / "data")
    config = TrainConfig(epochs=40, **{**TINY, "personal_slots": 64})
    args = [sys.executable, "-m", "edgekit.cli", "train-base", "-o", str(tmp_path / "out"), "--data-dir", str(data),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--sources", ",".join(config.sources), "--epochs", "40",
            *(f"--{k.replace('_', '-')}={getattr(config, k)}" for k in
              ("vocab_size", "context_length", "embed_dim", "hidden", "feature_dim", "batch_size"))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    output = []
    for line in proc.stdout:
        output.append(line)
        if line.startswith("epoch 2/40 done"):
            proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 130, "".join(output[-20:])
    assert any("saved in" in line for line in output) and not (tmp_path / "out" / "training.json").exists()

    quiet = dict(echo=lambda line: None)
    resumed = train(config, tmp_path / "out", data, checkpoint_dir=tmp_path / "ckpt", **quiet)
    whole = train(config, tmp_path / "whole", data, checkpoint_dir=tmp_path / "ckpt-whole", **quiet)
    assert resumed["finished"] and resumed["loss_history"] == whole["loss_history"]
    a, b = (load_base_model(tmp_path / d)[0].get_weights() for d in ("out", "whole"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
