"""An export consumes the contribution: two updates from one device never carry the same text.

Real pieces: the bundled model in LiteRT, personalized on SMS text, HPKE keys from
``generate_keypair``, updates opened by the server's own ``open_update``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.federated import (DEFAULT_CLIP_NORM, UpdatePolicy, export_update, generate_keypair,
                               generate_signing_key, key_id, load_private_key)
from edgekit.federated.hazmat import delta_norm, open_update
from edgekit.model import EdgeModel, default_model_path

SMS = (Path(__file__).resolve().parents[1] / "data" / "personal" / "sms_ham.txt").read_text(
    encoding="utf-8").splitlines()
NO_CLIP = 1e4  # far above any contribution: the opened delta is the learned one, only float16-rounded


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("server")
    generate_keypair(folder / "server.key")
    generate_signing_key(folder / "server.signing.key", folder / "server.signing.pub")  # aggregate signs
    return folder / "server.key", folder / "server.key.pub"


@pytest.fixture(scope="module")
def learned_state(tmp_path_factory) -> Path:
    """A state folder after one personalization; tests copy it, since exporting changes it."""
    folder = tmp_path_factory.mktemp("learned")
    EdgeModel.load(state_dir=folder).personalize(SMS[:150])
    return folder


@pytest.fixture
def device(learned_state, tmp_path) -> EdgeModel:
    shutil.copytree(learned_state, tmp_path / "state")
    return EdgeModel.load(state_dir=tmp_path / "state")


def opened(data: bytes, private_path: Path, clip_norm: float):
    """``(header, (dW, db))`` as ``edgekit aggregate`` verifies and decrypts them."""
    meta = EdgeModel.load(stateless=True).metadata
    private = load_private_key(private_path)
    policy = UpdatePolicy(model_fingerprint=meta["fingerprint"],
                          shape=(meta["feature_dim"], meta["vocab_size"] - meta["personal_slots"]),
                          key_id=key_id(private.public_key()), clip_norm=clip_norm)
    return open_update(data, private, policy)


def assert_same_delta(got, want) -> None:
    err = delta_norm(got[0] - want[0], got[1] - want[1])
    assert err <= 1e-3 * delta_norm(*want), (err, delta_norm(*want))


def test_a_second_export_with_nothing_new_is_refused(device, keys, tmp_path):
    export_update(device, keys[1], tmp_path / "first.edgekit-update")
    assert device.n_examples == 0 and delta_norm(*device.head_delta()) == 0.0
    with pytest.raises(ValueError, match="nothing to export"):
        export_update(device, keys[1], tmp_path / "second.edgekit-update")
    assert not (tmp_path / "second.edgekit-update").exists()


def test_each_update_carries_only_what_was_learned_since_the_previous_export(keys):
    model = EdgeModel.load(stateless=True)  # consuming needs no state folder (nothing to save)
    model.personalize(SMS[:150])
    first_learning = model.head_delta()
    first = opened(export_update(model, keys[1], clip_norm=NO_CLIP), keys[0], NO_CLIP)
    assert_same_delta(first[1], first_learning)
    report = model.personalize(SMS[150:300])
    second_learning = model.head_delta()
    header, delta = opened(export_update(model, keys[1], clip_norm=NO_CLIP), keys[0], NO_CLIP)
    assert header.n_examples == report.train_examples
    assert_same_delta(delta, second_learning)
    both = [a + b for a, b in zip(first_learning, second_learning)]
    assert delta_norm(delta[0] - both[0], delta[1] - both[1]) > 0.5 * delta_norm(*first_learning)


def test_the_consumed_contribution_stays_consumed_after_a_reload(device, keys):
    personal = device.state.delta_w.copy(), dict(device.state.personal_words)
    export_update(device, keys[1])
    reloaded = EdgeModel.load(state_dir=device.state_dir)
    assert reloaded.n_examples == 0 and reloaded.state.contrib_w is None
    assert np.array_equal(reloaded.state.delta_w.dense(), personal[0].dense())
    assert reloaded.state.personal_words == personal[1]
    with pytest.raises(ValueError, match="nothing to export"):
        export_update(reloaded, keys[1])


def test_cli_export_consumes_and_its_default_clip_norm_is_the_rounds(device, keys, tmp_path):
    """`export-update` and `aggregate` with no --clip-norm: the update is accepted; exporting again fails."""
    runner = CliRunner()
    export = ["export-update", "--server-key", keys[1], "--state-dir", device.state_dir, "-o", tmp_path / "u.edgekit-update"]
    done = runner.invoke(main, [str(a) for a in export + ["--json"]])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["clip_norm"] == DEFAULT_CLIP_NORM
    again = runner.invoke(main, [str(a) for a in export])
    assert again.exit_code != 0 and "nothing to export" in again.output
    done = runner.invoke(main, [str(a) for a in ["aggregate", "--key", keys[0], "--model", default_model_path(),
                                                 tmp_path / "u.edgekit-update", "-o", tmp_path / "v2.tflite", "--json"]])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["accepted"] == 1
