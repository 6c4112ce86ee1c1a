"""The public API: one import line, typed results, one error base class, no file-name trap."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgekit
from edgekit import EdgekitError, EdgeModel, Evaluation, ModelInfo, PersonalizeResult
from edgekit.errors import StateError

SMS = Path(__file__).resolve().parents[1] / "data" / "personal" / "sms_ham.txt"


@pytest.fixture
def bundled(tmp_path):
    return EdgeModel.load(state_dir=tmp_path / "state")


def test_every_public_name_imports_from_the_top_level():
    for name in edgekit.__all__:
        assert getattr(edgekit, name) is not None, name
    for name in ("Suggestion", "TrainConfig", "Journal", "EdgekitError"):
        assert name in edgekit.__all__


def test_every_deliberate_error_shares_one_base_class():
    for name in ("ModelFileError", "StateError", "UpdateError", "KeyFileError", "NotEnoughTextError",
                 "RuntimeMissingError"):
        assert issubclass(getattr(edgekit, name), EdgekitError), name
    with pytest.raises(EdgekitError, match="no such model file"):
        EdgeModel.load("no-such-model.tflite", stateless=True)


def test_results_are_dataclasses_with_the_cli_json_keys(bundled):
    lines = SMS.read_text(encoding="utf-8").splitlines()[:300]
    info = bundled.info()
    assert isinstance(info, ModelInfo) and info.vocab_size == len(bundled.vocab)
    assert set(info.to_dict()) >= {"path", "name", "fingerprint", "quantization", "runtime", "vocab_size",
                                   "context_length", "personal_words", "personal_examples", "state_file", "parents",
                                   "signed"}
    evaluation = bundled.evaluate(lines[250:], max_targets=200)
    assert isinstance(evaluation, Evaluation) and evaluation.targets == 200
    assert set(evaluation.to_dict()) == {"targets", "top1", "top3", "perplexity", "keystroke_savings", "oov_rate"}
    result = bundled.personalize(lines[:250])
    assert isinstance(result, PersonalizeResult) and result.train_examples > 0
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert set(as_dict) == {"adopted", "train_examples", "heldout_examples", "before", "after",
                            "new_personal_words", "phrase_weight", "seconds", "before_new", "after_new", "phases"}
    assert set(as_dict["before"]) == {"top1", "top3"}
    assert "np.float" not in repr(result) and type(result.before.top3) is float


def test_a_file_name_given_as_text_is_refused_with_the_fix(bundled, tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(SMS.read_text(encoding="utf-8").splitlines()[:100]), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=r"Path\('notes.txt'\)"):
        bundled.personalize("notes.txt")
    assert bundled.personalize_file("notes.txt").train_examples > 0


def test_personalize_file_and_path_read_the_same_text(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(SMS.read_text(encoding="utf-8").splitlines()[:100]), encoding="utf-8")
    a = EdgeModel.load(stateless=True).personalize(Path(notes))
    b = EdgeModel.load(stateless=True).personalize_file(str(notes))
    assert (a.train_examples, a.heldout_examples) == (b.train_examples, b.heldout_examples)


def test_text_given_as_bytes_is_refused_with_the_fix(bundled):
    with pytest.raises(TypeError, match=r"bytes: decode it first"):
        bundled.personalize(b"see you at the station\n")
    with pytest.raises(TypeError, match=r"line 2 of the text is bytes, not str: decode it first"):
        bundled.personalize(["see you", b"at the station"])
    with pytest.raises(TypeError, match=r"bytes: decode it first"):
        bundled.evaluate(b"see you at the station")


def test_a_state_folder_that_cannot_be_written_is_named_before_learning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    m = EdgeModel.load(state_dir=blocker / "state")
    with pytest.raises(StateError, match=r"a-file/state: the personal state cannot be written there"):
        m.personalize(SMS.read_text(encoding="utf-8").splitlines()[:100])
    assert not m.state.n_examples  # refused before learning: nothing half done
