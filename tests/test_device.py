"""The device runtime on real .tflite files: suggestions, personalization, state."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit.model import EdgeModel
from edgekit.modelfile import ModelFileError
from edgekit.errors import StateError
from tests.fixtures.texts import base_lines, user_lines


@pytest.fixture(params=["none", "int8"])
def model(request, trained_files, tmp_path):
    return EdgeModel.load(trained_files[request.param], state_dir=tmp_path / "state", unsigned_local=True)


def top3(m: EdgeModel, lines: list[str]) -> float:
    return m.evaluate(lines).top3


def test_suggestions_are_deterministic_and_ranked(model):
    first = model.suggest("w3 w4 w5 ", k=5)
    assert first == model.suggest("w3 w4 w5 ", k=5)
    probs = [s.probability for s in first]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert first[0].word == "w6"  # the base rule counts up by one


@pytest.mark.parametrize("mode", ["none", "int8"])
def test_ranking_inside_the_file_matches_ranking_on_the_host(trained_files, tmp_path, mode):
    """Files converted before the word ranking (no ``ranked_ids``) rank on the host: same words, same probabilities."""
    from dataclasses import replace

    from edgekit.modelfile import read_model_file, write_model_file

    new = read_model_file(trained_files[mode])
    old = {k: v for k, v in new.metadata.items() if k != "ranked_ids"}
    write_model_file(tmp_path / "old.tflite", replace(new, metadata=old))
    old_m, new_m = (EdgeModel.load(p, stateless=True, unsigned_local=True)
                    for p in (tmp_path / "old.tflite", trained_files[mode]))
    for text in ["", "w3 w4 w5 ", "w10 w11 ", "hi "]:
        for k in (1, 3, 8):
            got, want = new_m.suggest(text, k=k), old_m.suggest(text, k=k)
            assert np.allclose([s.probability for s in got], [s.probability for s in want])
            # int8 logits tie often; which of the tied words fills the last places may differ
            above = want[-1].probability * (1 + 1e-5)
            assert {s.word for s in got if s.probability > above} == {s.word for s in want if s.probability > above}


def test_installing_a_version_reads_its_outputs_from_its_own_metadata(trained_files, tmp_path):
    """A version whose file lacks the word ranking must not be read as if it had it (and the reverse)."""
    from dataclasses import replace

    from edgekit.federated.install import with_head
    from edgekit.modelfile import read_model_file, write_model_file
    from edgekit.runtime import read_head

    def unranked(file):
        return replace(file, metadata={k: v for k, v in file.metadata.items() if k != "ranked_ids"})

    def nudged(file, by):
        W, b = read_head(file)
        return with_head(file, (W * (1 + by), b))

    full = read_model_file(trained_files["int8"])
    write_model_file(tmp_path / "old.tflite", unranked(full))
    ranked = nudged(full, 0.01)  # a child of the unranked file's version (the ranking is not part of it)
    write_model_file(tmp_path / "ranked.tflite", ranked)
    write_model_file(tmp_path / "unranked.tflite", unranked(nudged(ranked, 0.01)))
    m = EdgeModel.load(tmp_path / "old.tflite", state_dir=tmp_path / "state", unsigned_local=True)
    for version in (tmp_path / "ranked.tflite", tmp_path / "unranked.tflite"):
        m.install_global(version, unsigned_local=True)
        fresh = EdgeModel.load(version, stateless=True, unsigned_local=True)
        for text in ["", "w3 w4 w5 ", "hi "]:
            assert m.suggest(text, k=8) == fresh.suggest(text, k=8)
            assert "</s>" not in [s.word for s in m.suggest(text, k=8)]


def test_partial_words_complete(model):
    words = [s.word for s in model.suggest("w3 w4 w1", k=3)]
    assert words and all(w.startswith("w1") for w in words)
    assert [s.word for s in model.suggest("w3 w4 W1", k=1)][0].startswith("W1")  # follows the user's case


@pytest.mark.parametrize("text", ["", " ", "w1 " * 500, "qqq rrr sss ", "w1, w2! «w3» — ", "日本語 ", "w1\n\nw2 "])
def test_awkward_contexts_still_suggest(model, text):
    assert len(model.suggest(text, k=3)) == 3


def test_unknown_prefix_suggests_nothing(model):
    assert model.suggest("w1 w2 xyz") == []


def test_personalization_learns_a_style_shift(model):
    """Without the bound on other text: the user's language here shares no word with the base language,
    so learning it costs the base language more than the default bound allows (see tests/test_personal.py)."""
    from edgekit.personal.train import TrainConfig

    text = user_lines(300)
    train, test = text[:240], text[240:]
    before = top3(model, test)
    report = model.personalize(train, TrainConfig(other_text_slack=None))
    after = top3(model, test)
    assert report.adopted
    assert after >= before * 1.2 and after - before > 0.2, (before, after)
    assert "zorblax" in report.new_personal_words
    assert "zorblax" in [s.word for s in model.suggest("hi ", k=3)]


def test_an_interrupted_personalization_leaves_no_personal_words(model, monkeypatch):
    """Ctrl-C while choosing: the new words' slots are freed, nothing counts toward an update, suggestions as before."""
    import edgekit.personal.learner as learner

    before = model.suggest("hi ", k=5)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(learner, "score_options", interrupted)  # after training, before the choice
    with pytest.raises(KeyboardInterrupt):
        model.personalize(user_lines(200))
    assert model.vocab.personal_words == {} and model.suggest("hi ", k=5) == before
    assert model.n_examples == 0 and model.state.contrib_w is None


def test_head_delta_leaves_personal_slots_on_the_device(model):
    model.personalize(user_lines(200))
    dw, db = model.head_delta()
    assert dw.shape == (model.feature_dim, model.vocab.first_slot) and db.shape == (model.vocab.first_slot,)
    assert np.abs(dw).sum() > 0 and model.n_examples > 0
    slot = model.vocab.id_of("zorblax")  # learned (in the contribution) but kept off the export
    assert slot >= model.vocab.first_slot and np.abs(model.state.contrib_w.dense()[:, slot]).sum() > 0


def test_personalization_is_never_worse_on_held_out_text(model):
    model.personalize(user_lines(200))
    shown = [model.suggest(t, k=3) for t in ("hi ", "w100 w97 ", "w1 w2 ")]
    rng = np.random.default_rng(5)
    noise = [" ".join(f"w{i}" for i in rng.integers(0, 180, 6)) for _ in range(100)]
    report = model.personalize(noise)
    assert report.after.top3 >= report.before.top3
    if not report.adopted:  # what the user sees is untouched; only the federated contribution grew
        reloaded = EdgeModel.load(model.path, state_dir=model.state_dir, unsigned_local=True)
        assert [reloaded.suggest(t, k=3) for t in ("hi ", "w100 w97 ", "w1 w2 ")] == shown


def test_a_few_lines_on_one_topic_cannot_undo_earlier_learning(model):
    """The never-worse check includes earlier held-out lines, not only the new batch's."""
    model.personalize(user_lines(300))
    later = user_lines(100, seed=7)
    before = top3(model, later)
    report = model.personalize(["w7 w8 w9 w10 w11 w12.", "w7 w8 w9 w10 w11 w12 w13."] * 8)
    assert report.heldout_examples > 200  # the new batch's 3 lines and the earlier held-out ones
    assert top3(model, later) >= before - 0.01, report


def test_held_out_lines_are_kept_with_the_state_and_bounded(model, tmp_path, monkeypatch):
    import edgekit.personal.learner as em

    monkeypatch.setattr(em, "HELDOUT_TOKENS", 200)
    model.personalize(user_lines(300))
    kept = model.state.heldout
    assert kept and sum(map(len, kept)) <= 200
    again = EdgeModel.load(model.path, state_dir=model.state_dir, unsigned_local=True)
    assert again.state.heldout == kept


def test_state_survives_reload_and_reset_forgets(model, tmp_path):
    fresh = model.suggest("hi ", k=3)
    model.personalize(user_lines(200))
    personal = model.suggest("hi ", k=3)
    again = EdgeModel.load(model.path, state_dir=tmp_path / "state", unsigned_local=True)
    assert again.suggest("hi ", k=3) == personal != fresh
    again.reset()
    assert not again.state_file.exists()
    assert again.suggest("hi ", k=3) == fresh


def test_state_of_another_model_is_refused(trained_files, tmp_path):
    m = EdgeModel.load(trained_files["none"], state_dir=tmp_path, unsigned_local=True)
    m.personalize(user_lines(200))
    other = tmp_path / "other.tflite"
    from edgekit.modelfile import make_fingerprint, read_model_file, write_model_file

    mf = read_model_file(trained_files["none"])
    mf.metadata["body_sha256"] = "0" * 64  # another body: another version (a bare new fingerprint is refused as edited)
    mf.metadata["fingerprint"] = make_fingerprint(mf.metadata["body_sha256"], mf.metadata["head_sha256"], mf.vocab)
    write_model_file(other, mf)
    with pytest.raises(StateError, match=r"another model version.*its own state folder \(--state-dir"):
        EdgeModel.load(other, state_dir=tmp_path, unsigned_local=True)


def test_corrupt_state_is_refused_not_lost(trained_files, tmp_path):
    m = EdgeModel.load(trained_files["none"], state_dir=tmp_path, unsigned_local=True)
    m.personalize(user_lines(200))
    m.state_file.write_bytes(m.state_file.read_bytes()[:100])
    with pytest.raises(StateError, match="corrupt"):
        EdgeModel.load(trained_files["none"], state_dir=tmp_path, unsigned_local=True)
    assert m.state_file.exists()  # kept for the user to inspect or reset


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "zip-only"])
def test_damaged_model_files_are_refused_before_the_interpreter(trained_files, tmp_path, damage):
    data = trained_files["int8"].read_bytes()
    bad = tmp_path / "bad.tflite"
    if damage == "flip":
        data = data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:]
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    else:
        data = data[data.index(b"PK\x03\x04"):]
    bad.write_bytes(data)
    with pytest.raises(ModelFileError):
        EdgeModel.load(bad, stateless=True, unsigned_local=True)


def test_bad_personal_text_gets_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        model.personalize([])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        model.personalize(latin1)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x00" * 100)
    with pytest.raises(ValueError, match="binary"):
        model.personalize(binary)
    assert not model.state_file.exists()


def test_huge_text_is_streamed_with_bounded_lines(model, tmp_path):
    from edgekit.personal.train import TrainConfig

    huge = tmp_path / "huge.txt"
    line = " ".join(user_lines(1)[0] for _ in range(10))
    with open(huge, "w") as f:
        for _ in range(5_000):
            f.write(line + "\n")
    report = model.personalize(huge, TrainConfig(max_lines=100, epochs=1))
    assert report.train_examples + report.heldout_examples <= 100 * len(line.split()) * 2


def test_a_kill_during_save_leaves_the_previous_state_readable(trained_files, tmp_path):
    """SIGKILL a process that saves state in a loop; the file must always load."""
    m = EdgeModel.load(trained_files["none"], state_dir=tmp_path, unsigned_local=True)
    m.personalize(user_lines(200))
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from edgekit.model import EdgeModel
        m = EdgeModel.load({str(trained_files['none'])!r}, state_dir={str(tmp_path)!r}, unsigned_local=True)
        print("ready", flush=True)
        while True:
            m.state.phrase_weight = (m.state.phrase_weight + 0.1) % 1
            m.save()
    """)
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        import time

        time.sleep(delay)
        proc.kill()
        proc.wait()
        loaded = EdgeModel.load(trained_files["none"], state_dir=tmp_path, unsigned_local=True)
        assert loaded.state.n_examples == m.state.n_examples


def test_device_path_never_imports_tensorflow(trained_files, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import edgekit, edgekit.cli, edgekit.commands.device
        from edgekit import EdgeModel
        m = EdgeModel.load({str(trained_files['int8'])!r}, state_dir={str(tmp_path)!r}, unsigned_local=True)
        m.suggest("w1 w2 ")
        bad = [name for name in ("tensorflow", "keras", "edgekit.converters") if name in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
