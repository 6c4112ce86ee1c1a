"""Aggregation: weighted FedAvg, robust modes under poisoning, a bad batch member never sinks the batch."""
from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edgekit.federated import aggregate_updates
from edgekit.federated.hazmat import Aggregator, clip_delta, delta_norm, make_update
from tests.fixtures.federated import SHARED, policy_for, random_delta, write_tiny_model

PRIVATE = X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.tflite")


def _update(model, delta, n=1, public=PRIVATE.public_key(), **kw):
    return make_update(*delta, public_key=public, model_fingerprint=model.fingerprint, n_examples=n, **kw)


def test_fedavg_weights_by_examples(model):
    rng = np.random.default_rng(0)
    deltas = [clip_delta(*random_delta(rng, 0.01), 1.0) for _ in range(3)]
    counts = [1, 2, 5]
    result = aggregate_updates([_update(model, d, n) for d, n in zip(deltas, counts)], PRIVATE,
                               policy_for(model, PRIVATE))
    want = [sum(n * d[i] for d, n in zip(deltas, counts)) / sum(counts) for i in (0, 1)]
    assert result.accepted == 3 and result.total_examples == 8 and not result.rejections
    assert delta_norm(result.delta[0] - want[0], result.delta[1] - want[1]) < 1e-3


def test_weight_is_capped_so_one_device_cannot_claim_the_round(model):
    small, big = random_delta(np.random.default_rng(1), 0.01), random_delta(np.random.default_rng(2), 0.01)
    result = aggregate_updates([_update(model, small, 10), _update(model, big, 10**9)], PRIVATE,
                               policy_for(model, PRIVATE, max_examples=10))
    mean = [(a + b) / 2 for a, b in zip(small, big)]
    assert delta_norm(result.delta[0] - mean[0], result.delta[1] - mean[1]) < 1e-3


def test_bad_updates_are_reported_and_the_rest_aggregated(model, tmp_path):
    rng = np.random.default_rng(3)
    good = [_update(model, random_delta(rng, 0.01)) for _ in range(3)]
    other = write_tiny_model(tmp_path / "other.tflite", seed=9)
    tampered = bytearray(good[0])
    tampered[-5] ^= 0xFF
    batch = [bytes(tampered), good[0], good[1], good[0], b"junk", good[1][:200],
             _update(other, random_delta(rng, 0.01)),
             _update(model, random_delta(rng, 0.01), public=X25519PrivateKey.generate().public_key()),
             _update(model, random_delta(rng, 0.01), clip_norm=5.0), good[2]]
    path = tmp_path / "u.edgekit-update"
    path.write_bytes(good[2])
    seen = []
    result = aggregate_updates(batch + [path, tmp_path / "missing"], PRIVATE, policy_for(model, PRIVATE),
                               on_reject=seen.append)
    assert result.accepted == 3
    assert [r.reason for r in result.rejections] == ["decrypt", "replay", "format", "format", "wrong-model",
                                                     "wrong-key", "policy", "replay", "io"]
    assert seen == result.rejections and all(r.message for r in result.rejections)


def test_nothing_accepted_is_an_error(model):
    with pytest.raises(ValueError, match="no update accepted"):
        aggregate_updates([b"junk"], PRIVATE, policy_for(model, PRIVATE))


def _poisoned_batch(n=50, poisoned=5, boost=50.0, seed=0):
    """Clipped honest deltas around a common direction; 10% send the negated direction scaled up."""
    rng = np.random.default_rng(seed)
    direction = random_delta(rng, 0.05)
    honest = [clip_delta(direction[0] + rng.normal(0, 0.02, SHARED).astype(np.float32),
                         direction[1] + rng.normal(0, 0.02, SHARED[1]).astype(np.float32), 1.0)
              for _ in range(n - poisoned)]
    bad = [(-boost * honest[0][0], -boost * honest[0][1]) for _ in range(poisoned)]
    return honest, bad


def _combine(deltas, mode, **kw):
    with Aggregator(SHARED, mode, **kw) as agg:
        for d in deltas:
            agg.add(*d)
        return agg.result()


@pytest.mark.parametrize("mode", ["median", "trimmed-mean"])
def test_robust_modes_stay_close_to_the_clean_mean_fedavg_does_not(mode):
    honest, bad = _poisoned_batch()
    clean = _combine(honest, "fedavg")
    scale = delta_norm(*clean)

    def dist(d):
        return delta_norm(d[0] - clean[0], d[1] - clean[1]) / scale

    assert dist(_combine(honest + bad, "fedavg")) > 2.0
    assert dist(_combine(honest + bad, mode, trim=0.1)) < 0.25


def test_robust_top3_matches_clean_run_on_the_head():
    """The lead's end-to-end test does this on real text; here: top-3 of features @ (W + delta)."""
    honest, bad = _poisoned_batch(seed=1)
    rng = np.random.default_rng(2)
    W, feats = rng.normal(0, 0.05, SHARED).astype(np.float32), rng.normal(0, 1, (200, SHARED[0]))

    def top3(d):
        return np.argsort(-(feats @ (W + d[0]) + d[1]), axis=1)[:, :3]

    clean = top3(_combine(honest, "fedavg"))

    def agreement(d):
        return np.mean([len(set(a) & set(b)) / 3 for a, b in zip(top3(d), clean)])

    assert agreement(_combine(honest + bad, "trimmed-mean")) > 0.9
    assert agreement(_combine(honest + bad, "median")) > 0.9
    assert agreement(_combine(honest + bad, "fedavg")) < 0.5


def test_robust_mode_keeps_rows_on_disk_and_removes_them_on_close(tmp_path):
    agg = Aggregator(SHARED, "median", workdir=tmp_path)
    agg.add(*random_delta(np.random.default_rng(0)))
    agg.add(*random_delta(np.random.default_rng(1)))
    agg.result()
    assert [f.stat().st_size for f in tmp_path.rglob("*.f32")] == [2 * 4 * (SHARED[0] + 1) * SHARED[1]]
    agg.close()
    assert not list(tmp_path.iterdir())


def test_block_reduction_matches_numpy(monkeypatch):
    from edgekit.federated.hazmat import aggregator

    monkeypatch.setattr(aggregator, "BLOCK_BYTES", 4 * 7 * 5)  # 5 columns per block, 7 rows
    deltas = [random_delta(np.random.default_rng(i)) for i in range(7)]
    rows = np.stack([np.concatenate([d[0].ravel(), d[1]]) for d in deltas])
    got = _combine(deltas, "median")
    assert np.allclose(np.concatenate([got[0].ravel(), got[1]]), np.median(rows, axis=0))
    got = _combine(deltas, "trimmed-mean", trim=0.2)
    want = np.sort(rows, axis=0)[1:-1].mean(axis=0)
    assert np.allclose(np.concatenate([got[0].ravel(), got[1]]), want, atol=1e-6)


def test_central_noise_is_unweighted_mean_plus_noise_on_the_sum(model):
    rng = np.random.default_rng(7)
    clip = 1.0
    deltas = [clip_delta(*random_delta(rng, 0.01), clip) for _ in range(4)]
    batch = [_update(model, d, n, clip_norm=clip) for d, n in zip(deltas, [1, 1, 1, 1000])]
    result = aggregate_updates(batch, PRIVATE, policy_for(model, PRIVATE, clip_norm=clip),
                               central_noise_multiplier=2.0, rng=np.random.default_rng(0))
    mean = [sum(d[i] for d in deltas) / 4 for i in (0, 1)]
    noise = np.concatenate([(result.delta[0] - mean[0]).ravel(), result.delta[1] - mean[1]])
    assert abs(noise.std() - 2.0 * clip / 4) < 0.05
    with pytest.raises(ValueError, match="central noise"):
        aggregate_updates(batch, PRIVATE, policy_for(model, PRIVATE), mode="median", central_noise_multiplier=1.0)
