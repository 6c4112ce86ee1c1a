"""The Keras model contract, a tiny training run, and the train-base outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.convert

from edgekit.converters import corpus  # noqa: E402
from edgekit.converters.keras_model import build_model, compile_for_training, load_base_model  # noqa: E402
from edgekit.converters.train_base import TrainConfig, topk_hits, train  # noqa: E402
from edgekit.vocab import Vocabulary  # noqa: E402

V, L = 40, 6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
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


def test_train_writes_a_loadable_model(tmp_path):
    data = tmp_path / "data"
    text = "the cat sat on the mat. the dog sat on the rug.\nsee you at the cafe at noon\n" * 20
    for name in [*corpus.TRAIN_FILES, *corpus.HELDOUT_FILES.values()]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(text)
    config = TrainConfig(vocab_size=20, personal_slots=2, context_length=L, embed_dim=4, hidden=8,
                         feature_dim=4, epochs=2, batch_size=64)
    record = train(config, tmp_path / "out", data)
    assert record["loss_history"]["loss"][-1] < record["loss_history"]["loss"][0]
    assert set(record["heldout"]) == {"email", "persuasion"}
    model, vocab, cfg = load_base_model(tmp_path / "out")
    assert len(vocab) == model.get_layer("head").units and cfg["context_length"] == L
    saved = json.loads((tmp_path / "out" / "training.json").read_text())
    assert len(saved["data_sha256"]) == len(corpus.TRAIN_FILES) + len(corpus.HELDOUT_FILES)


def test_same_seed_same_weights():
    from edgekit.converters.train_base import fit

    rng = np.random.default_rng(1)
    x = rng.integers(0, V, size=(128, L)).astype(np.int32)
    y = rng.integers(5, V, size=128).astype(np.int32)
    config = TrainConfig(context_length=L, embed_dim=4, hidden=8, feature_dim=4, batch_size=32, epochs=1)
    runs = [fit(config, x, y, (x[:32], y[:32]), V)[0].get_weights() for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
