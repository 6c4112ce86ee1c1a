"""Every example's smoke path, as a user runs it, on real components: the bundled model in
LiteRT, keys from `edgekit keygen`, updates opened by the server's own code.

(The terminal keyboard has its own file: tests/test_keyboard_demo.py.)
The bundled model is retrained now and then: nothing here depends on which words it suggests.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.federated import DEFAULT_CLIP_NORM, UpdatePolicy, key_id, load_private_key
from edgekit.federated.hazmat import open_update
from edgekit.model import default_model_path
from edgekit.modelfile import read_model_file

ROOT = Path(__file__).resolve().parents[1]
PI = ROOT / "examples" / "raspberry_pi"
EMBEDDING = ROOT / "examples" / "embedding"
SMS = (ROOT / "data" / "personal" / "sms_ham.txt").read_text(encoding="utf-8").splitlines(keepends=True)
CLIP = 50.0
UPDATE_NAME = re.compile(r"[0-9a-f]{16}-\d{8}T\d{6}Z-[0-9a-f]{32}\.edgekit-update")
TRAINED = re.compile(r"\((\d+) training / ")  # in the line describe() prints after learning


def run(*args, state_dir: Path, expect: int = 0) -> subprocess.CompletedProcess:
    """A fresh Python process, as a user would start it, with its own state folder."""
    env = {**os.environ, "EDGEKIT_STATE_DIR": str(state_dir)}
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=180)
    assert done.returncode == expect, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def server_key(tmp_path_factory) -> Path:
    """A real key pair from the CLI; the private key stays on the 'server' (this test)."""
    folder = tmp_path_factory.mktemp("server")
    run("-m", "edgekit.cli", "keygen", "-o", folder / "server.key", state_dir=folder)
    return folder / "server.key"


def open_sealed(path: Path, private_path: Path, clip_norm: float = CLIP):
    """Verify and decrypt an update as `edgekit aggregate` does; returns (header, delta)."""
    meta = read_model_file(default_model_path()).metadata
    private = load_private_key(private_path)
    policy = UpdatePolicy(model_fingerprint=meta["fingerprint"],
                          shape=(meta["feature_dim"], meta["vocab_size"] - meta["personal_slots"]),
                          key_id=key_id(private.public_key()), clip_norm=clip_norm)
    return open_update(path.read_bytes(), private, policy)


# -- raspberry_pi/nightly.py ---------------------------------------------------

def nightly(tmp_path: Path, server_key: Path, expect: int = 0) -> subprocess.CompletedProcess:
    return run(PI / "nightly.py", "--text-dir", tmp_path / "text", "--outbox", tmp_path / "outbox",
               "--server-key", server_key.with_name("server.key.pub"), "--clip-norm", CLIP,
               "--flower-text", tmp_path / "flower.txt", state_dir=tmp_path / "state", expect=expect)


def test_nightly_learns_new_text_once_and_keeps_every_unsent_update(tmp_path, server_key):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "monday.txt").write_text("".join(SMS[:80]), encoding="utf-8")
    first = nightly(tmp_path, server_key)
    assert "held-out top-3" in first.stdout
    [update] = (tmp_path / "outbox").iterdir()
    assert UPDATE_NAME.fullmatch(update.name)
    header, _ = open_sealed(update, server_key)
    assert header.n_examples == int(TRAINED.search(first.stdout)[1]) and header.clip_norm == CLIP
    assert (tmp_path / "flower.txt").read_text(encoding="utf-8") == "".join(SMS[:80])

    again = nightly(tmp_path, server_key)  # nothing new: no second learning, no second update
    assert "nothing new" in again.stdout
    assert list((tmp_path / "outbox").iterdir()) == [update]

    (tmp_path / "text" / "tuesday.txt").write_text("".join(SMS[80:160]), encoding="utf-8")
    (tmp_path / "text" / "photo.txt").write_bytes(b"\xff\xd8\xff\xe0 not text")
    third = nightly(tmp_path, server_key)
    assert "photo.txt" in third.stderr  # skipped with a reason, the rest still learned
    [newer] = set((tmp_path / "outbox").iterdir()) - {update}  # the unsent older one stays: it holds Monday
    assert UPDATE_NAME.fullmatch(newer.name)
    assert open_sealed(newer, server_key)[0].n_examples == int(TRAINED.search(third.stdout)[1])  # Tuesday only
    assert (tmp_path / "flower.txt").read_text(encoding="utf-8") == "".join(SMS[:160])


def test_nightly_refuses_bad_arguments_before_learning(tmp_path, server_key):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("".join(SMS[:80]), encoding="utf-8")
    no_key = run(PI / "nightly.py", "--text-dir", tmp_path / "text", "--outbox", tmp_path / "outbox",
                 state_dir=tmp_path / "state", expect=2)
    assert "--outbox and --server-key go together" in no_key.stderr
    wrong_key = run(PI / "nightly.py", "--text-dir", tmp_path / "text", "--outbox", tmp_path / "outbox",
                    "--server-key", server_key, state_dir=tmp_path / "state", expect=1)  # the private key
    assert "not a PEM public key" in wrong_key.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "outbox").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify(tmp_path):
    """The units as shipped, but with this Python: `verify` insists that ExecStart's program exists."""
    for name in ("edgekit-nightly.service", "edgekit-nightly.timer"):
        text = (PI / name).read_text()
        (tmp_path / name).write_text(text.replace("%h/edgekit-env/bin/python", sys.executable))
    service = (tmp_path / "edgekit-nightly.service").read_text()
    assert "Type=oneshot" in service and "nightly.py" in service
    assert "Persistent=true" in (tmp_path / "edgekit-nightly.timer").read_text()
    check = subprocess.run(["systemd-analyze", "verify", "edgekit-nightly.service", "edgekit-nightly.timer"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr


# -- embedding/ and device_texts.py ---------------------------------------------

def test_ten_line_app_suggests_learns_and_exports(tmp_path, server_key):
    messages = tmp_path / "messages.txt"
    messages.write_text("".join(SMS[:100]), encoding="utf-8")
    out = run(EMBEDDING / "app.py", messages, server_key.with_name("server.key.pub"), tmp_path / "u.edgekit-update",
              state_dir=tmp_path / "state")
    assert "'see you tomo': [" in out.stdout and "held-out top-3" in out.stdout
    assert len([line for line in (EMBEDDING / "app.py").read_text().splitlines() if line.strip()]) <= 14
    header, _ = open_sealed(tmp_path / "u.edgekit-update", server_key, clip_norm=DEFAULT_CLIP_NORM)
    assert header.n_examples > 0
    assert run(EMBEDDING / "app.py", state_dir=tmp_path / "state", expect=1).stderr.startswith("usage:")


def test_keyboard_predictor_demo(tmp_path):
    out = run(EMBEDDING / "predictor.py", state_dir=tmp_path)
    assert "before:" in out.stdout and "after:" in out.stdout and "'adopted'" in out.stdout


def test_device_texts_gives_each_device_its_own_text(tmp_path):
    run("-m", "examples.device_texts", "--devices", "2", "--sources", "sms_ham", "--out", tmp_path / "devices",
        state_dir=tmp_path)
    folders = sorted((tmp_path / "devices").iterdir())
    assert len(folders) == 2
    train = [(f / "train.txt").read_text(encoding="utf-8") for f in folders]
    assert all(train) and train[0] != train[1]


# -- embedding/MOBILE.md stays true to the bundled file ---------------------------

MOBILE = (EMBEDDING / "MOBILE.md").read_text(encoding="utf-8")


def doc_table(header_start: str) -> list[list[str]]:
    """Rows (lists of cells) of the MOBILE.md table whose header line starts with ``header_start``."""
    lines = MOBILE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.fixture(scope="module")
def bundled():
    """The bundled file's parts, and an interpreter on its flatbuffer."""
    from edgekit.runtime import load_interpreter

    model = read_model_file(default_model_path())
    return model, load_interpreter(model.flatbuffer)[0]


def test_every_metadata_key_the_doc_names_is_in_the_file(bundled):
    meta = bundled[0].metadata
    keys = [key for row in doc_table("| `edgekit.json` key") for key in ticked(row[0])]
    assert len(keys) >= 15
    for key in keys:
        node = meta
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"MOBILE.md names `{key}`, the file has no such key"
            node = node[part]


def test_every_output_the_doc_describes_matches_the_interpreter(bundled):
    model, interp = bundled
    meta, outputs = model.metadata, interp.get_output_details()
    rows = doc_table("| output (`outputs` key)")
    assert {ticked(row[0])[0] for row in rows} == set(meta["outputs"]), "document every output, and only those"
    k = int(re.search(r"K = (\d+)", MOBILE).group(1))
    width = {"F": meta["feature_dim"], "V": meta["vocab_size"], "K": k, "1": 1}
    for cell, shape, dtype, _ in rows:
        detail = outputs[meta["outputs"][ticked(cell)[0]]]
        assert detail["dtype"].__name__ == dtype, cell
        assert list(detail["shape_signature"]) == [-1, width[shape.strip("`[]").split(", ")[1]]], cell
    signature = interp.get_signature_list()["serving_default"]
    assert signature["inputs"] == ["tokens"] and "`serving_default`" in MOBILE and "input `tokens`" in MOBILE
    assert interp.get_input_details()[meta["inputs"]["tokens"]]["dtype"].__name__ == "int32"


def test_the_whole_file_loads_in_the_interpreter_as_the_doc_says(bundled):
    from ai_edge_litert.interpreter import Interpreter

    meta = bundled[0].metadata
    interp = Interpreter(model_path=str(default_model_path()))  # flatbuffer and appended zip together
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.zeros((1, meta["context_length"]), np.int32))
    interp.invoke()
    logits = interp.get_tensor(interp.get_output_details()[meta["outputs"]["logits"]]["index"])
    assert logits.shape == (1, meta["vocab_size"]) and np.isfinite(logits).all()


def test_the_doc_recipe_finds_the_archive(bundled):
    data = default_model_path().read_bytes()
    end = len(data) - 22
    assert data[end:end + 4] == b"PK\x05\x06"
    size, offset = struct.unpack("<II", data[end + 12:end + 20])
    start = end - size - offset
    assert start == bundled[0].metadata["tflite_bytes"]
    names = zipfile.ZipFile(io.BytesIO(data[start:])).namelist()
    assert {"edgekit.json", "vocab.txt"} <= set(names)


def test_the_doc_vocabulary_and_tokenizer_examples(bundled):
    from edgekit.tokenizer import Tokenizer, TokenizerConfig

    model = bundled[0]
    for i, token, _ in doc_table("| id | token"):
        assert model.vocab[int(i)] == ticked(token)[0]
    assert model.vocab[-model.metadata["personal_slots"]] == "<personal_0>"
    tokenizer = Tokenizer(TokenizerConfig.from_dict(model.metadata["tokenizer"]))
    rows = doc_table("| typed text")
    assert len(rows) >= 4
    for text, context, partial in rows:
        assert tokenizer.split_partial(ticked(text)[0]) == (ticked(context)[0].split(), "".join(ticked(partial)))


def test_the_raw_public_key_is_the_end_of_the_der(server_key):
    from cryptography.hazmat.primitives import serialization

    from edgekit.federated import load_public_key

    public = load_public_key(server_key.with_name("server.key.pub"))
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert der[-32:] == public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
