"""Devices personalize and export sealed updates; the server aggregates; the global model improves.

Real pieces end to end: tiny trained model converted with TensorFlow, LiteRT
on each "device", HPKE-sealed update files, the streaming aggregator.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgekit.federated import (UpdatePolicy, aggregate_updates, export_update, generate_keypair, install_delta,
                               key_id, load_private_key)
from edgekit.federated.hazmat import delta_norm, make_update
from edgekit.model import EdgeModel
from tests.fixtures.texts import user_lines

N_DEVICES = 20
CLIP = 20.0


@pytest.fixture(scope="module")
def world(tmp_path_factory, trained_files):
    """A model file, server keys, and the state folders of 20 devices that each personalized.

    Exporting consumes a device's contribution, so tests get copies (``devices``),
    never the devices themselves.
    """
    root = tmp_path_factory.mktemp("federation")
    model_path = root / "global-v1.tflite"
    shutil.copy(trained_files["dynamic"], model_path)
    public = generate_keypair(root / "server.key")
    states, held_out = [], []
    for d in range(N_DEVICES):
        text = user_lines(120, seed=100 + d)  # the same style shift, different text on each device
        m = EdgeModel.load(model_path, state_dir=root / f"device{d}", unsigned_local=True)
        report = m.personalize(text[:96])
        assert report.adopted and m.n_examples
        states.append(m.state_dir)
        held_out += text[96:]
    return {"root": root, "model": model_path, "fingerprint": m.fingerprint, "public": public, "states": states,
            "shape": (m.feature_dim, m.vocab.first_slot), "held_out": held_out,
            "private": load_private_key(root / "server.key")}


def devices(world, folder, count: int = N_DEVICES) -> list[EdgeModel]:
    """Fresh copies of the first ``count`` personalized devices, their state under ``folder``."""
    copies = []
    for state in world["states"][:count]:
        shutil.copytree(state, folder / state.name)
        copies.append(EdgeModel.load(world["model"], state_dir=folder / state.name, unsigned_local=True))
    return copies


def policy_for(world) -> UpdatePolicy:
    return UpdatePolicy(model_fingerprint=world["fingerprint"], shape=world["shape"], key_id=key_id(world["public"]),
                        clip_norm=CLIP)


def global_top3(world, delta, name: str) -> float:
    out = world["root"] / name
    install_delta(world["model"], delta, out)
    return EdgeModel.load(out, stateless=True, unsigned_local=True).evaluate(world["held_out"]).top3


def test_ten_devices_make_a_better_global_model(world, tmp_path):
    paths = [tmp_path / f"update{i}.edgekit-update" for i in range(N_DEVICES)]
    for m, path in zip(devices(world, tmp_path), paths):
        export_update(m, world["public"], path, clip_norm=CLIP)
    result = aggregate_updates(paths, world["private"], policy_for(world))
    assert result.accepted == len(paths) and not result.rejections
    before = EdgeModel.load(world["model"], stateless=True, unsigned_local=True).evaluate(world["held_out"]).top3
    after = global_top3(world, result.delta, "global-v2.tflite")
    assert after > before + 0.03, (before, after)


def test_installing_the_new_global_keeps_personalization_and_avoids_double_counting(world, tmp_path):
    [device] = devices(world, tmp_path, count=1)
    update = tmp_path / "u.edgekit-update"
    export_update(device, world["public"], update, clip_norm=CLIP)
    result = aggregate_updates([update], world["private"], policy_for(world))
    new_path = tmp_path / "global-v2.tflite"
    install_delta(world["model"], result.delta, new_path)
    personal_before = device.suggest("hi ", k=3)
    device.install_global(new_path, unsigned_local=True)  # signatures: tests/test_install_cli.py
    assert device.fingerprint != world["fingerprint"]
    assert [s.word for s in device.suggest("hi ", k=3)][:1] == [s.word for s in personal_before][:1]
    dw, db = device.head_delta()
    assert delta_norm(dw, db) == 0.0 and device.n_examples == 0
    reloaded = EdgeModel.load(new_path, state_dir=device.state_dir, unsigned_local=True)
    assert reloaded.fingerprint == device.fingerprint and reloaded.state.personal_words


def test_robust_aggregation_resists_poisoned_devices(world, tmp_path):
    """10% of devices send a sign-flipped delta blown up to the clipping norm."""
    honest = [m.head_delta() for m in devices(world, tmp_path)]
    policy = policy_for(world)
    fp, pub = policy.model_fingerprint, world["public"]

    def sealed(dw, db, n):
        return make_update(dw, db, public_key=pub, model_fingerprint=fp, n_examples=n, clip_norm=CLIP)

    clean = [sealed(dw, db, 300) for dw, db in honest]
    attackers = max(1, len(honest) // 10)
    poisoned = list(clean[attackers:])
    for dw, db in honest[:attackers]:
        scale = -0.999 * CLIP / delta_norm(dw, db)
        poisoned.append(sealed(dw * scale, db * scale, 10_000))
    key = world["private"]
    scores = {
        "clean": global_top3(world, aggregate_updates(clean, key, policy, mode="fedavg").delta, "clean.tflite"),
        "fedavg": global_top3(world, aggregate_updates(poisoned, key, policy, mode="fedavg").delta, "fedavg.tflite"),
        "median": global_top3(world, aggregate_updates(poisoned, key, policy, mode="median").delta, "median.tflite"),
        "trimmed": global_top3(world, aggregate_updates(poisoned, key, policy, mode="trimmed-mean").delta,
                               "trimmed.tflite"),
    }
    assert scores["fedavg"] < scores["clean"] - 0.03, scores
    for robust in ("median", "trimmed"):
        assert scores[robust] >= scores["clean"] - 0.02, scores
        assert scores[robust] > scores["fedavg"], scores
    assert np.isfinite(list(scores.values())).all()
