"""Two federated rounds from the command line only, on the committed tiny int8 model (and, with
TensorFlow, on one `edgekit convert` makes here from a freshly trained Keras model): personalize on
devices -> export -> aggregate (signed, head in the flatbuffer) -> install on each device -> suggest
-> personalize -> export -> aggregate -> install; and every version a device must not install
(tampered, unsigned, older, from a foreign key, a sibling, another model) is refused with its reason."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.modelfile import make_fingerprint, read_model_file, write_model_file
from edgekit.signing import SIGNATURE_NAME
from tests.fixtures.texts import base_lines, user_lines

pytestmark = pytest.mark.slow
CLIP = "20"
DEVICES = 3


def run(*args, ok: bool = True):
    out = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert (out.exit_code == 0) == ok, out.output
    return json.loads(out.output) if ok and "--json" in args else out.output


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def device_round(tmp_path, round_no: int, model_args: list) -> list:
    """Each device personalizes on new text of its own and exports its update into round_<n>/."""
    infos = []
    for i in range(DEVICES):
        state = tmp_path / f"device{i}"
        text = write_lines(tmp_path / f"text{i}-{round_no}.txt", user_lines(120, seed=100 * round_no + i))
        run("personalize", *model_args, "--state-dir", state, "--text", text, "--json")
        run("export-update", "--server-key", tmp_path / "server.key.pub", *model_args, "--state-dir", state,
            "-o", tmp_path / f"round{round_no}" / f"{i}.edgekit-update", "--clip-norm", CLIP, "--json")
        infos.append(run("info", *model_args, "--state-dir", state, "--json"))
    return infos


def aggregate(tmp_path, model, out, key="server.key"):
    return run("aggregate", "--key", tmp_path / key, "-m", model, tmp_path / out.replace(".tflite", ""),
               "-o", tmp_path / out, "--clip-norm", CLIP, "--heldout", tmp_path / "heldout.txt", "--json")


def install_everywhere(tmp_path, version, *extra):
    for i in range(DEVICES):
        state = tmp_path / f"device{i}"
        current = [*extra[:2], "--unsigned-local"] if extra else []  # -m base: converted, signed by no one
        before = run("info", *current, "--state-dir", state, "--json")
        report = run("install", tmp_path / version, *extra, "--state-dir", state, "--json")
        after = run("info", "--state-dir", state, "--json")  # no -m: the installed version is the default
        assert report["trust"].startswith("signed by ") and after["fingerprint"] == report["installed"]
        assert after["origin"] == "installed"
        assert after["personal_words"] == before["personal_words"] > 0  # "zorblax" survives the install
        assert after["personal_examples"] == 0  # the server folded the contribution into the new head
        words = [s["word"] for s in run("suggest", "hi ", "--state-dir", state, "-k", "3", "--json")]
        assert "zorblax" in words


def test_two_rounds_from_the_cli(trained_files, tmp_path):
    two_rounds(tmp_path, shutil.copy(trained_files["int8"], tmp_path / "base.tflite"))


@pytest.mark.convert
def test_two_rounds_from_a_model_converted_on_the_cli(tmp_path):
    """The loop from its very start: `edgekit convert` of a Keras model trained here (as the committed tiny
    model was made), then both rounds and every refusal, all from the command line."""
    from tests.fixtures.make_tiny_model import train_tiny
    from tests.fixtures.texts import device_vocab

    vocab = device_vocab()
    (tmp_path / "keras").mkdir()
    train_tiny(vocab).save(tmp_path / "keras" / "model.keras")
    write_lines(tmp_path / "keras" / "vocab.txt", vocab.tokens)
    run("convert", "-m", tmp_path / "keras" / "model.keras", "-o", tmp_path / "base.tflite", "--quantize", "int8",
        "--calibration-text", write_lines(tmp_path / "calibration.txt", base_lines(100)), "--eval-max", "0")
    assert read_model_file(tmp_path / "base.tflite").metadata["quantization"] == "int8"
    two_rounds(tmp_path, tmp_path / "base.tflite")


def two_rounds(tmp_path, base):
    """Keys, two rounds of personalize -> export -> aggregate (signed) -> install -> suggest, and the refusals."""
    write_lines(tmp_path / "heldout.txt", base_lines(200, seed=7) + user_lines(100, seed=8))
    keys = run("keygen", "-o", tmp_path / "server.key", "--json")
    assert (tmp_path / "server.signing.key").stat().st_mode & 0o777 == 0o600

    device_round(tmp_path, 1, ["-m", base, "--unsigned-local"])  # converted here: signed by no one
    v2 = aggregate(tmp_path, base, "round1.tflite")
    assert v2["accepted"] == DEVICES and v2["signed_by"] == keys["verify_key_id"]
    storage = v2["head_storage"]
    assert storage["where"] == "flatbuffer" and storage["float_top3"] - storage["int8_top3"] <= 0.002
    assert read_model_file(tmp_path / "round1.tflite").head is None  # no head.npz: the device's fast path
    install_everywhere(tmp_path, "round1.tflite", "-m", base, "--verify-key", tmp_path / "server.signing.pub")

    device_round(tmp_path, 2, [])  # the installed version by default
    v3 = aggregate(tmp_path, tmp_path / "round1.tflite", "round2.tflite")
    assert v3["parent_fingerprint"] == v2["fingerprint"] and v3["accepted"] == DEVICES
    install_everywhere(tmp_path, "round2.tflite")  # the key is trusted since the first install
    info = run("info", "--state-dir", tmp_path / "device0", "--json")
    assert info["parents"][:2] == [v2["fingerprint"], read_model_file(base).fingerprint] and info["signed"]

    refusals(tmp_path, base)
    assert "removed" in run("reset", "--yes", "--state-dir", tmp_path / "device0")
    assert run("info", "--state-dir", tmp_path / "device0", "--json")["fingerprint"] == v3["fingerprint"]


def refusals(tmp_path, base):
    """Each version a device must not take, with the reason it names; the device is unchanged after each."""
    device = tmp_path / "device1"
    v3 = read_model_file(tmp_path / "round2.tflite")
    flat = bytearray(v3.flatbuffer)
    flat[len(flat) // 2] ^= 0x01
    write_model_file(tmp_path / "tampered.tflite", replace(v3, flatbuffer=bytes(flat)))
    write_model_file(tmp_path / "unsigned.tflite",
                     replace(v3, extras={k: v for k, v in v3.extras.items() if k != SIGNATURE_NAME}))
    run("keygen", "-o", tmp_path / "other.key")  # a foreign server signs the same round with its own key
    run("aggregate", "--key", tmp_path / "server.key", "--signing-key", tmp_path / "other.signing.key",
        "-m", tmp_path / "round1.tflite", tmp_path / "round2", "-o", tmp_path / "foreign.tflite", "--clip-norm", CLIP,
        "--seen-ids", tmp_path / "other.seen-ids")  # the other server's own replay ledger
    cases = {"tampered.tflite": "changed after it was signed", "unsigned.tflite": "not signed",
             "round1.tflite": "older than the installed", "round2.tflite": "is the one installed",
             "foreign.tflite": "does not trust", "base.tflite": "not signed"}
    before = run("info", "--state-dir", device, "--json")
    for name, reason in cases.items():
        assert reason in run("install", tmp_path / name, "--state-dir", device, ok=False), name
    # A version from another branch: made from round 1 by other updates, signed by this server.
    run("aggregate", "--key", tmp_path / "server.key", "-m", tmp_path / "round1.tflite", tmp_path / "round2",
        "-o", tmp_path / "branch.tflite", "--clip-norm", CLIP, "--mode", "median",
        "--seen-ids", tmp_path / "branch.seen-ids")  # the same updates again: not a replay for this test
    assert "does not descend" in run("install", tmp_path / "branch.tflite", "--state-dir", device, ok=False)
    # Another model altogether, though signed by this server and told it is local.
    other = read_model_file(base)
    vocab = [*other.vocab[:-1], "<other>"]  # a consistent file (fingerprint and all) of another model
    meta = {**other.metadata, "fingerprint": make_fingerprint(other.metadata["body_sha256"],
                                                              other.metadata["head_sha256"], vocab)}
    write_model_file(tmp_path / "other-model.tflite", replace(other, vocab=vocab, metadata=meta))
    assert "not a version of this model" in run("install", tmp_path / "other-model.tflite", "--unsigned-local",
                                                "--state-dir", device, ok=False)
    assert run("info", "--state-dir", device, "--json") == before


def test_an_install_killed_before_it_recorded_the_version_is_finished_by_running_it_again(trained_files, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgekit.federated.install import with_head
    from edgekit.runtime import read_head
    from edgekit.signing import public_pem, sign_model

    key = Ed25519PrivateKey.generate()
    (tmp_path / "server.signing.pub").write_bytes(public_pem(key.public_key()))
    base = read_model_file(trained_files["int8"])
    W, b = read_head(base)
    write_model_file(tmp_path / "v2.tflite", sign_model(with_head(base, (W * 1.01, b)), key))
    state = tmp_path / "device"
    text = write_lines(tmp_path / "text.txt", user_lines(120))
    run("personalize", "-m", trained_files["int8"], "--unsigned-local", "--state-dir", state, "--text", text)
    install = ["install", tmp_path / "v2.tflite", "-m", trained_files["int8"], "--state-dir", state,
               "--verify-key", tmp_path / "server.signing.pub"]
    run(*install)
    # As if killed after the state was re-bound to v2 and before v2 was recorded as the device's model:
    (state / "current-model.json").unlink()
    shutil.rmtree(state / "models")
    assert "another model version" in run("suggest", "-m", trained_files["int8"], "--unsigned-local",
                                          "--state-dir", state, "hi ", ok=False)
    run(*install)  # run again: it finishes
    info = run("info", "--state-dir", state, "--json")
    assert info["fingerprint"] == read_model_file(tmp_path / "v2.tflite").fingerprint and info["personal_words"] > 0
