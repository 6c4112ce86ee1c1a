"""What the command line says when it is used wrongly, or in the other ways issue 11 names.

Runs the real commands on the bundled model (no TensorFlow needed) with the
personal state in a temporary folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.model import EdgeModel, default_model_path

MODEL = default_model_path()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("EDGEKIT_STATE_DIR", str(folder))
    return folder


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def words(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return [s["word"] for s in json.loads(result.stdout)]


# -- suggest ---------------------------------------------------------------
def test_suggest_k_up_to_the_files_top_k_width(state_dir):
    assert len(words(run("suggest", "-k", 32, "i am going to ", "--json"))) == 32
    result = run("suggest", "-k", 33, "i am going to ")
    assert result.exit_code == 2
    assert f"33 is more suggestions than {MODEL.name} ranks: choose 1..32" in result.output
    assert "Traceback" not in result.output and "numpy" not in result.output


def test_suggest_k_far_above_the_vocabulary_is_a_message_not_a_numpy_error(state_dir):
    result = run("suggest", "-k", 10**6, "see you tomo")
    assert result.exit_code == 2 and "choose 1..32" in result.output


def test_suggest_reads_stdin_and_files_like_the_argument(state_dir, tmp_path):
    typed = words(run("suggest", "see you tomo", "--json"))
    assert typed[0] == "tomorrow"
    assert words(run("suggest", "-", "--json", input="see you tomo\n")) == typed  # echo's line break dropped
    assert words(run("suggest", "--text-file", "-", "--json", input="see you tomo")) == typed
    (tmp_path / "t.txt").write_text("see you tomo\n", encoding="utf-8")
    assert words(run("suggest", "--text-file", tmp_path / "t.txt", "--json")) == typed
    next_word = words(run("suggest", "i am going to ", "--json"))
    assert words(run("suggest", "-", "--json", input="i am going to \n")) == next_word


def test_suggest_refuses_text_twice_and_undecodable_input(state_dir, tmp_path):
    (tmp_path / "t.txt").write_text("hi", encoding="utf-8")
    both = run("suggest", "hello", "--text-file", tmp_path / "t.txt")
    assert both.exit_code == 2 and "either as TEXT or with --text-file, not both" in both.output
    binary = run("suggest", "-", input=b"\xff\xfe")
    assert binary.exit_code == 1 and "standard input: not UTF-8 text (bad byte 0xff on line 1)" in binary.output
    missing = run("suggest", "--text-file", tmp_path / "nope.txt")  # worded as personalize and evaluate word it
    assert missing.exit_code == 1 and "nope.txt: no such text file" in missing.output


# -- reset -----------------------------------------------------------------
@pytest.fixture
def saved_state(state_dir) -> Path:
    model = EdgeModel.load(state_dir=state_dir)
    model.save()
    assert model.state_file is not None and model.state_file.exists()
    return model.state_file


def test_declining_reset_deletes_nothing_and_is_no_error(saved_state):
    result = run("reset", input="n\n")
    assert result.exit_code == 0, result.output
    assert "nothing deleted" in result.output and "Error" not in result.output
    assert saved_state.exists()


def test_reset_with_no_answer_deletes_nothing_and_exits_1(saved_state):
    result = run("reset", input="")
    assert result.exit_code == 1
    assert "nothing deleted" in result.output and "--yes" in result.output
    assert "Error" not in result.output and "Aborted" not in result.output
    assert saved_state.exists()


def test_confirmed_reset_deletes(saved_state):
    result = run("reset", input="y\n")
    assert result.exit_code == 0 and f"removed {saved_state}" in result.output
    assert not saved_state.exists()


# -- keys and aggregation ----------------------------------------------------
def test_keygen_over_an_existing_key_names_force(tmp_path):
    assert run("keygen", "-o", tmp_path / "k").exit_code == 0
    before = (tmp_path / "k").read_bytes()
    again = run("keygen", "-o", tmp_path / "k", "--ask-passphrase")  # refused before any prompt
    assert again.exit_code == 1 and "already exists; pass --force to replace it" in again.output
    assert "passphrase" not in again.output.lower()
    assert (tmp_path / "k").read_bytes() == before
    assert run("keygen", "-o", tmp_path / "k", "--force").exit_code == 0
    assert (tmp_path / "k").read_bytes() != before


def test_aggregate_given_the_public_key_says_so(tmp_path):
    run("keygen", "-o", tmp_path / "k")
    (tmp_path / "u.edgekit-update").write_bytes(b"unread")
    result = run("aggregate", "--key", tmp_path / "k.pub", "-m", MODEL, tmp_path / "u.edgekit-update",
                 "-o", tmp_path / "n.tflite")
    assert result.exit_code == 1
    assert f"{tmp_path / 'k.pub'}: a public key (the .pub file devices get)" in result.output


def test_export_update_given_the_private_key_says_so(tmp_path, state_dir):
    run("keygen", "-o", tmp_path / "k")
    result = run("export-update", "--server-key", tmp_path / "k", "-o", tmp_path / "u.edgekit-update")
    assert result.exit_code == 1
    assert f"{tmp_path / 'k'}: a private key: devices get only the public key" in result.output
    assert not (tmp_path / "u.edgekit-update").exists()


def test_aggregate_on_a_folder_without_updates_says_so(tmp_path):
    run("keygen", "-o", tmp_path / "k")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "notes.txt").write_text("not an update")
    result = run("aggregate", "--key", tmp_path / "k", "-m", MODEL, tmp_path / "outbox", "-o", tmp_path / "n.tflite")
    assert result.exit_code == 1
    assert f"no update files (*.edgekit-update) in {tmp_path / 'outbox'}" in result.output
    assert not (tmp_path / "n.tflite").exists()


# -- evaluate: -m, and the positional model kept one version ------------------
@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "t.txt"
    path.write_text("see you tomorrow at the station\ni am going to call you later\n" * 5, encoding="utf-8")
    return path


def test_evaluate_takes_the_model_with_m_and_positionally_with_a_warning(text):
    new = run("evaluate", "-m", MODEL, "--text", text, "--json")
    assert new.exit_code == 0, new.output
    assert new.stderr == ""
    old = run("evaluate", MODEL, "--text", text, "--json")
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert "`edgekit evaluate MODEL` is deprecated" in old.stderr and "-m MODEL" in old.stderr
    assert set(json.loads(new.stdout)) == {"model", "text", "top1", "top3", "perplexity", "keystroke_savings",
                                           "oov_rate", "targets"}


def test_evaluate_needs_one_model(text):
    none = run("evaluate", "--text", text)
    assert none.exit_code == 2 and "no model: pass -m/--model" in none.output
    two = run("evaluate", MODEL, "-m", MODEL, "--text", text)
    assert two.exit_code == 2 and "pass only -m/--model" in two.output


# -- simulate: the default corpora do not depend on the current folder -------
def test_simulate_default_data_is_the_checkouts(tmp_path, monkeypatch):
    from edgekit.commands import simulate

    assert simulate.DEFAULT_DATA == Path(__file__).resolve().parents[1] / "data" / "personal"
    assert simulate.DEFAULT_DATA.is_dir()
    monkeypatch.chdir(tmp_path)  # no data/ here
    monkeypatch.setattr(simulate, "DEFAULT_DATA", tmp_path / "site-packages" / "data" / "personal")
    result = run("simulate")
    assert result.exit_code == 1
    assert "corpora ship with a source checkout" in result.output and "--data FOLDER" in result.output
