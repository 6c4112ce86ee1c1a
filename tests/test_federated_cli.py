"""`edgekit keygen` and `edgekit aggregate` end to end (update files made by the library)."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.federated import DEFAULT_CLIP_NORM, load_public_key
from edgekit.federated.hazmat import make_update
from edgekit.installed import trust_key
from edgekit.modelfile import read_model_file
from tests.fixtures.federated import random_delta, write_tiny_model


def _run(*args, **kw):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)
    return result


def test_keygen_then_aggregate_with_rejections(tmp_path):
    (tmp_path / "pass").write_text("s3cret\n")
    out = _run("keygen", "-o", tmp_path / "server.key", "--passphrase-file", tmp_path / "pass", "--json")
    assert out.exit_code == 0, out.output
    assert stat.S_IMODE(os.stat(tmp_path / "server.key").st_mode) == 0o600
    assert json.loads(out.output)["encrypted"] is True
    assert _run("keygen", "-o", tmp_path / "server.key").exit_code != 0  # never silently replaced

    model = write_tiny_model(tmp_path / "m.tflite")
    public = load_public_key(tmp_path / "server.key.pub")
    updates = tmp_path / "updates"
    updates.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        data = make_update(*random_delta(rng, 0.01), public_key=public, model_fingerprint=model.fingerprint,
                           n_examples=i + 1)
        (updates / f"{i}.edgekit-update").write_bytes(data)
    truncated = make_update(*random_delta(rng, 0.01), public_key=public, model_fingerprint=model.fingerprint,
                            n_examples=1)[:-1]
    (updates / "bad.edgekit-update").write_bytes(truncated)

    args = ["aggregate", "--key", tmp_path / "server.key", "--passphrase-file", tmp_path / "pass",
            "--model", tmp_path / "m.tflite", updates, "-o", tmp_path / "next.tflite",
            "--seen-ids", tmp_path / "seen.txt", "--json"]
    out = _run(*args)
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["accepted"] == 4 and [r["reason"] for r in report["rejected"]] == ["decrypt"]
    assert report["parent_fingerprint"] == model.fingerprint
    assert report["clip_norm"] == DEFAULT_CLIP_NORM  # the round's default accepts the library's default
    assert read_model_file(tmp_path / "next.tflite").fingerprint == report["fingerprint"]
    assert len((tmp_path / "seen.txt").read_text().split()) == 4

    again = _run(*args)  # every id is now in the ledger: replays, nothing to aggregate
    assert again.exit_code != 0 and "no update accepted" in again.output


@pytest.mark.dp
def test_aggregate_reports_privacy_and_wrong_passphrase(tmp_path):
    (tmp_path / "pass").write_text("right")
    _run("keygen", "-o", tmp_path / "k", "--passphrase-file", tmp_path / "pass")
    model = write_tiny_model(tmp_path / "m.tflite")
    data = make_update(*random_delta(np.random.default_rng(0)), public_key=tmp_path / "k.pub",
                       model_fingerprint=model.fingerprint, n_examples=1, noise_multiplier=1.0)
    (tmp_path / "u.edgekit-update").write_bytes(data)
    base = ["aggregate", "--key", tmp_path / "k", "--model", tmp_path / "m.tflite", tmp_path / "u.edgekit-update",
            "-o", tmp_path / "n.tflite"]
    (tmp_path / "wrong").write_text("wrong")
    out = _run(*base, "--passphrase-file", tmp_path / "wrong")
    assert out.exit_code != 0 and "passphrase" in out.output
    out = _run(*base, "--noise-multiplier", "1.0", "--rounds", "10", "--sampling-rate", "0.1",
               env={"EDGEKIT_KEY_PASSPHRASE": "right"})
    assert out.exit_code == 0, out.output
    assert "epsilon" in out.output and "accepted 1 of 1" in out.output


@pytest.mark.dp
def test_aggregate_with_central_noise_reports_central_privacy(tmp_path):
    _run("keygen", "-o", tmp_path / "k")
    model = write_tiny_model(tmp_path / "m.tflite")
    for i in range(3):
        data = make_update(*random_delta(np.random.default_rng(i)), public_key=tmp_path / "k.pub",
                           model_fingerprint=model.fingerprint, n_examples=1)
        (tmp_path / f"{i}.edgekit-update").write_bytes(data)
    out = _run("aggregate", "--key", tmp_path / "k", "--model", tmp_path / "m.tflite", tmp_path,
               "-o", tmp_path / "n.tflite", "--central-noise-multiplier", "1.1", "--sampling-rate", "0.01",
               "--rounds", "100", "--json")
    assert out.exit_code == 0, out.output
    privacy = json.loads(out.output)["privacy"]
    assert privacy["kind"] == "central" and 0 < privacy["epsilon"] < 10


def test_keygen_refuses_an_empty_passphrase_file(tmp_path):
    (tmp_path / "pass").write_text("\n")
    out = _run("keygen", "-o", tmp_path / "k", "--passphrase-file", tmp_path / "pass")
    assert out.exit_code != 0 and "empty" in out.output and not (tmp_path / "k").exists()


def test_aggregate_keeps_a_replay_ledger_by_default_and_skips_what_is_not_an_update_file(tmp_path):
    """No --seen-ids: the ledger beside the key still refuses a replayed file in the next round. A FIFO, a
    folder and a link out of the updates folder are skipped with a reason; the round goes on without them."""
    assert _run("keygen", "-o", tmp_path / "server.key").exit_code == 0
    model = write_tiny_model(tmp_path / "m.tflite")
    updates = tmp_path / "updates"
    updates.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        (updates / f"{i}.edgekit-update").write_bytes(make_update(
            *random_delta(rng, 0.01), public_key=tmp_path / "server.key.pub", model_fingerprint=model.fingerprint,
            n_examples=5))
    os.mkfifo(updates / "fifo.edgekit-update")
    (updates / "dir.edgekit-update").mkdir()
    (tmp_path / "elsewhere.edgekit-update").write_bytes((updates / "0.edgekit-update").read_bytes())
    (updates / "link.edgekit-update").symlink_to(tmp_path / "elsewhere.edgekit-update")
    args = ["aggregate", "--key", tmp_path / "server.key", "--model", tmp_path / "m.tflite", updates, "--json"]
    out = _run(*args, "-o", tmp_path / "next.tflite")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["mode"] == "trimmed-mean" and report["accepted"] == 3 and report["files"] == 6
    skipped = {os.path.basename(r["source"]): r for r in report["rejected"]}
    assert set(skipped) == {"fifo.edgekit-update", "dir.edgekit-update", "link.edgekit-update"}
    assert all(r["reason"] == "not-a-file" for r in skipped.values())
    assert "outside" in skipped["link.edgekit-update"]["message"]
    assert len((tmp_path / "server.key.seen-ids").read_text().split()) == 3

    (updates / "3.edgekit-update").write_bytes(make_update(
        *random_delta(rng, 0.01), public_key=tmp_path / "server.key.pub", model_fingerprint=model.fingerprint,
        n_examples=5))
    again = json.loads(_run(*args, "-o", tmp_path / "next2.tflite").output)  # next round, same folder
    assert again["accepted"] == 1
    assert sorted(r["reason"] for r in again["rejected"]).count("replay") == 3


def _updates(folder, model_path, public, n, seed):
    """``n`` update files (no local noise) for the model at ``model_path``, in ``folder``."""
    meta = read_model_file(model_path).metadata
    shape = (meta["feature_dim"], meta["vocab_size"] - meta["personal_slots"])
    folder.mkdir()
    for i in range(n):
        data = make_update(*random_delta(np.random.default_rng(seed + i), 0.01, shape), public_key=public,
                           model_fingerprint=meta["fingerprint"], n_examples=1)
        (folder / f"{i}.edgekit-update").write_bytes(data)
    return folder


@pytest.mark.dp
def test_central_noise_writes_the_ledger_that_info_prints_and_the_next_version_carries_on(trained_files, tmp_path):
    """The update-file path keeps the same epsilon ledger as a Flower server, chained over versions."""
    from edgekit.federated.privacy import composed_epsilon, describe_ledger, dp_epsilon, ledger_path, read_ledger

    _run("keygen", "-o", tmp_path / "k")
    (tmp_path / "device").mkdir()
    trust_key(tmp_path / "device", tmp_path / "k.signing.pub")  # the device's server: info -m runs its versions
    base = trained_files["dynamic"]

    def aggregate(model, updates, out, *noise):
        result = _run("aggregate", "--key", tmp_path / "k", "--model", model, updates, "-o", out, "--json", *noise)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    v2 = tmp_path / "v2.tflite"
    report = aggregate(base, _updates(tmp_path / "u1", base, tmp_path / "k.pub", 3, 0), v2,
                       "--central-noise-multiplier", "1.1", "--sampling-rate", "0.01", "--delta", "1e-8")
    first = read_ledger(v2)
    assert report["privacy_ledger"] == str(ledger_path(v2))
    assert first["fingerprint"] == report["fingerprint"]
    assert first["cumulative"]["since"] == report["parent_fingerprint"]
    assert first["round"]["cohort"] == 3 and first["delta"] == 1e-8 and first["cumulative"]["rounds"] == 1
    assert first["round"]["epsilon"] == pytest.approx(dp_epsilon(1.1, sampling_rate=0.01, delta=1e-8).epsilon)
    info = _run("info", "-m", v2, "--state-dir", tmp_path / "device", "--json")
    assert json.loads(info.output)["privacy"] == describe_ledger(first)

    # The next version, other noise and sampling: its cumulative epsilon composes both rounds.
    v3 = tmp_path / "v3.tflite"
    aggregate(v2, _updates(tmp_path / "u2", v2, tmp_path / "k.pub", 3, 10), v3,
              "--central-noise-multiplier", "2.0", "--sampling-rate", "0.02", "--delta", "1e-8")
    second = read_ledger(v3)
    events = [{"noise_multiplier": 1.1, "sampling_rate": 0.01, "rounds": 1},
              {"noise_multiplier": 2.0, "sampling_rate": 0.02, "rounds": 1}]
    assert second["cumulative"]["events"] == events and second["round"]["round"] == 2
    assert second["cumulative"]["epsilon"] == pytest.approx(composed_epsilon(events, 1e-8))
    assert second["cumulative"]["epsilon"] > max(first["cumulative"]["epsilon"], second["round"]["epsilon"])
    assert second["cumulative"]["since"] == first["cumulative"]["since"]
    assert second["parent_fingerprint"] == first["fingerprint"]

    # Without central noise: no ledger, and not the stale one of an earlier v3.
    aggregate(v2, _updates(tmp_path / "u3", v2, tmp_path / "k.pub", 3, 20), v3)
    assert not ledger_path(v3).exists()
    assert "privacy" not in json.loads(_run("info", "-m", v3, "--state-dir", tmp_path / "device", "--json").output)
