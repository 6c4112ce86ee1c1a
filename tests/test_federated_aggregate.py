"""Aggregation: weighted FedAvg, robust modes under poisoning, a bad batch member never sinks the batch."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edgekit.federated import DEFAULT_MODE, DEFAULT_TRIM, TOLERATED_FRACTION, aggregate_updates
from edgekit.federated.hazmat import Aggregator, clip_delta, delta_norm, make_update
from edgekit.federated.hazmat.aggregator import TEMP_PREFIX, remove_stale_folders
from edgekit.federated.hazmat.delta import row_norm_bound
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
    counts = [2, 3, 5]  # within twice the round's median claim: no weight is capped
    result = aggregate_updates([_update(model, d, n) for d, n in zip(deltas, counts)], PRIVATE,
                               policy_for(model, PRIVATE), mode="fedavg")
    want = [sum(n * d[i] for d, n in zip(deltas, counts)) / sum(counts) for i in (0, 1)]
    assert result.accepted == 3 and result.total_examples == 10 and not result.rejections
    assert delta_norm(result.delta[0] - want[0], result.delta[1] - want[1]) < 1e-3


def test_weight_is_capped_at_twice_the_round_median_so_one_device_cannot_claim_the_round(model, tmp_path):
    """Three devices claim 10 examples, one the maximum (10,000): it weighs 20, twice the median claim
    (read from the files' headers before any is decrypted)."""
    deltas = [random_delta(np.random.default_rng(i), 0.01) for i in range(4)]
    paths = [tmp_path / f"{i}.edgekit-update" for i in range(4)]
    for path, d, n in zip(paths, deltas, [10, 10, 10, 10_000]):
        path.write_bytes(_update(model, d, n))
    result = aggregate_updates(paths, PRIVATE, policy_for(model, PRIVATE), mode="fedavg")
    want = [(10 * (deltas[0][i] + deltas[1][i] + deltas[2][i]) + 20 * deltas[3][i]) / 50 for i in (0, 1)]
    assert delta_norm(result.delta[0] - want[0], result.delta[1] - want[1]) < 1e-3
    assert result.total_examples == 10_030


def test_a_claim_over_max_examples_is_refused_and_the_rest_aggregated(model):
    small, big = random_delta(np.random.default_rng(1), 0.01), random_delta(np.random.default_rng(2), 0.01)
    result = aggregate_updates([_update(model, small, 10), _update(model, big, 2**53 - 1)], PRIVATE,
                               policy_for(model, PRIVATE, max_examples=10), mode="fedavg")
    assert result.accepted == 1 and result.total_examples == 10
    assert [r.reason for r in result.rejections] == ["too-many-examples"]
    assert "9,007,199,254,740,991 examples" in result.rejections[0].message
    assert delta_norm(result.delta[0] - small[0], result.delta[1] - small[1]) < 1e-3


def test_an_update_spending_its_norm_on_one_word_is_refused_one_spread_over_many_is_not(model):
    """The per-row bound on one word's row (its dW column and its bias): 4/sqrt(36) = 67% of the clip norm
    for the 36 shared words of the tiny model (10% on the bundled model's 10,005)."""
    clip = 1.0
    one_row = np.zeros((SHARED[0] + 1, SHARED[1]), np.float32)
    one_row[:, 3] = clip / np.sqrt(SHARED[0] + 1)  # the whole norm on word 3
    spread = np.full_like(one_row, 0.09 * clip / np.sqrt(SHARED[0] + 1))  # every row at 9%: norm 0.54
    at_bound = np.zeros_like(one_row)
    at_bound[:, :2] = 0.66 * clip / np.sqrt(SHARED[0] + 1)  # two rows just under the bound
    batch = [_update(model, (m[:-1], m[-1]), clip_norm=clip) for m in (one_row, spread, at_bound)]
    result = aggregate_updates(batch, PRIVATE, policy_for(model, PRIVATE, clip_norm=clip))
    assert result.accepted == 2 and [r.reason for r in result.rejections] == ["row-norm"]
    assert "row of word 3" in result.rejections[0].message and "per-word bound 0.666667" in result.rejections[0].message
    loose = aggregate_updates(batch, PRIVATE, policy_for(model, PRIVATE, clip_norm=clip, max_row_share=1.0))
    assert loose.accepted == 3
    assert row_norm_bound(50.0, 0.0, (64, 10_005)) == pytest.approx(5.0)  # the bundled model: 10% of C


def test_the_default_mode_cuts_the_tolerated_share_of_hostile_updates_fedavg_does_not(model):
    """30% hostile updates at the clip norm against the honest direction: the default trimmed mean holds."""
    assert DEFAULT_MODE == "trimmed-mean" and DEFAULT_TRIM == TOLERATED_FRACTION == 0.3
    honest, _ = _poisoned_batch(n=14, poisoned=0, seed=4)
    bad = [(-honest[0][0], -honest[0][1])] * 6
    batch = [_update(model, d, 100, clip_norm=1.0) for d in honest] + \
            [_update(model, d, 10_000, clip_norm=1.0) for d in bad]
    policy = policy_for(model, PRIVATE, clip_norm=1.0, max_row_share=1.0)  # 36 words: no per-row bound here
    rows = np.stack([np.concatenate([d[0].ravel(), d[1]]) for d in honest])
    lo, hi = rows.min(axis=0) - 1e-3, rows.max(axis=0) + 1e-3  # float16 transport
    outside = {}
    for mode, trim in ((None, DEFAULT_TRIM), ("fedavg", DEFAULT_TRIM), ("trimmed-mean", 0.1)):
        result = aggregate_updates(batch, PRIVATE, policy, mode=mode, trim=trim)
        assert result.accepted == 20
        got = np.concatenate([result.delta[0].ravel(), result.delta[1]])
        outside[mode, trim] = np.mean((got < lo) | (got > hi))
    assert outside[None, DEFAULT_TRIM] == 0  # every coordinate within the honest values: the hostile six were cut
    assert outside["fedavg", DEFAULT_TRIM] > 0.3 and outside["trimmed-mean", 0.1] > 0.1  # a trim below 30% is not


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


def test_robust_mode_keeps_rows_on_disk_only_its_owner_reads_and_removes_them_on_close(tmp_path):
    agg = Aggregator(SHARED, "median", workdir=tmp_path)
    agg.add(*random_delta(np.random.default_rng(0)))
    agg.add(*random_delta(np.random.default_rng(1)))
    agg.result()
    [rows] = tmp_path.rglob("*.f32")
    assert rows.stat().st_size == 2 * 4 * (SHARED[0] + 1) * SHARED[1]
    assert stat.S_IMODE(rows.stat().st_mode) == 0o600 and stat.S_IMODE(rows.parent.stat().st_mode) == 0o700
    assert rows.parent.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
    agg.close()
    assert not list(tmp_path.iterdir())


def test_rows_left_by_a_killed_aggregation_are_removed_by_the_next_one(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{TEMP_PREFIX}{int(gone.stdout)}-abc"
    live = tmp_path / f"{TEMP_PREFIX}{os.getppid()}-def"  # a running process's folder stays
    other = tmp_path / "unrelated"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "deltas.f32").write_bytes(b"decrypted rows")
    with Aggregator(SHARED, "trimmed-mean", workdir=tmp_path):
        assert not dead.exists() and live.exists() and other.exists()
    assert remove_stale_folders(tmp_path) == []


def test_sigterm_during_a_robust_aggregation_removes_the_decrypted_rows(tmp_path):
    """``edgekit aggregate`` turns SIGTERM into SystemExit while it aggregates, so ``with`` blocks clean up."""
    code = ("import sys, time, numpy as np\n"
            "from edgekit.commands.federated import _exit_on_sigterm\n"
            "from edgekit.federated.hazmat import Aggregator\n"
            "with _exit_on_sigterm(), Aggregator((6, 36), 'median', workdir=sys.argv[1]) as agg:\n"
            "    agg.add(np.ones((6, 36), np.float32), np.ones(36, np.float32))\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    assert list(tmp_path.rglob("*.f32"))
    start = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=30) == 128 + 15 and time.monotonic() - start < 10
    assert not list(tmp_path.iterdir())


def test_a_fifo_among_the_updates_is_refused_at_once_not_waited_on(model, tmp_path):
    fifo = tmp_path / "stuck.edgekit-update"
    os.mkfifo(fifo)
    good = _update(model, random_delta(np.random.default_rng(5), 0.01))
    start = time.monotonic()
    for mode in ("fedavg", "median"):  # fedavg reads every header first (its median claim)
        result = aggregate_updates([fifo, tmp_path, good], PRIVATE, policy_for(model, PRIVATE), mode=mode)
        assert result.accepted == 1 and [r.reason for r in result.rejections] == ["not-a-file", "not-a-file"]
    assert time.monotonic() - start < 10


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
