"""Flower federation on a tiny trained model: real ClientApp, ServerApp and simulation engine.

The tiny model (``fl_model``, committed) knows the "base" language of ``tests.fixtures.texts``; every client
writes in the user style. Averaging the clients' head deltas must therefore
move the global model toward the user style, measurably, in a round or two.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgekit.flower import partitions as parts
from tests.fixtures.flower import deprecations_in_log
from tests.fixtures.texts import user_lines

flwr = pytest.importorskip("flwr")
pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.flower, pytest.mark.timeout(600)]
# A few hundred examples per device: train like `edgekit personalize` does (>= 150 steps).
DEVICE_TRAINING = {"epochs": 4, "min_steps": 150, "learning_rate": 3e-3}
CLIP = 20.0  # the tiny model's deltas have norms near 16: clip, but not to nothing


@pytest.fixture(autouse=True)
def environment_unchanged():
    """Later tests' subprocesses must not inherit what importing Flower and Ray sets in ``os.environ``.

    The simulation itself runs Flower in its own processes (a private SuperLink,
    ``edgekit.flower.simulate``) and passes them their environment explicitly.
    """
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def user_partitions(n: int) -> list[parts.Partition]:
    """One client per seed of the user style: same habits, different sentences."""
    sources = {f"user{i}": user_lines(60, seed=100 + i) for i in range(n)}
    return parts.make_partitions(sources, n, train_words=350, heldout_words=70)


def simulate(model, partitions, workdir, **settings):
    from edgekit.flower import simulate as sim
    from edgekit.flower.settings import FederationConfig

    config = FederationConfig(model=str(model), **{**DEVICE_TRAINING, "rounds": 1, "clip_norm": CLIP, **settings})
    rows = sim.run(config, partitions, workdir, cpus=2)
    log = (workdir / "flower.log").read_text(encoding="utf-8", errors="replace")
    assert not deprecations_in_log(log), deprecations_in_log(log)  # server, SuperLink and ClientApps alike
    return rows


def final_model(workdir, rounds: int = 1):
    from edgekit.modelfile import read_model_file

    return read_model_file(workdir / "models" / f"round-{rounds:03d}.tflite")


def final_head(workdir, rounds: int = 1):
    """The float head the server keeps for that round's version (``federated.install.float_head``)."""
    from edgekit.federated.install import float_head

    return float_head(workdir / "models" / f"round-{rounds:03d}.tflite")


def base_head(model):
    from edgekit.model import EdgeModel

    return EdgeModel.load(model, stateless=True, unsigned_local=True).base_head


def test_rounds_improve_the_global_model(fl_model, tmp_path):
    rows = simulate(fl_model, user_partitions(4), tmp_path, rounds=2, secure=False, central_noise_multiplier=0)
    assert [r.round for r in rows] == [0, 1, 2]
    assert all(r.sampled == 4 and r.failures == 0 and not r.rejected for r in rows[1:])
    assert rows[1].accepted == 4  # later, a device whose new head does not help its own text sends nothing
    assert rows[2].global_top3 > rows[1].global_top3 > rows[0].global_top3, rows
    assert rows[1].personal_top3 > rows[0].global_top3  # a device beats the global model on its own text
    assert len({r.fingerprint for r in rows}) == 3  # every round is a new model version
    assert final_model(tmp_path, 2).metadata["parent_fingerprint"] == rows[1].fingerprint
    # Signed by the key the ServerApp got in its run config (made in the workdir: none was given), so a
    # device on the starting model installs the last round's version without --unsigned-local.
    from click.testing import CliRunner

    from edgekit.cli import main
    from edgekit.signing import load_verify_keys, verify_model

    for version in (1, 2):
        verify_model(final_model(tmp_path, version), load_verify_keys(tmp_path / "server.signing.pub"))
    installed = CliRunner().invoke(main, ["install", str(tmp_path / "models" / "round-002.tflite"), "-m", str(fl_model),
                                          "--verify-key", str(tmp_path / "server.signing.pub"),
                                          "--state-dir", str(tmp_path / "device")])
    assert installed.exit_code == 0 and "signed by" in installed.output, installed.output


def test_secagg_matches_plain_fedavg_within_quantization(fl_model, tmp_path):
    from edgekit.flower.settings import QUANTIZATION_RANGE, FederationConfig, secagg_clipping_range

    partitions = user_partitions(4)
    # Under SecAgg+ every device counts once: compare with the unweighted plain mean.
    plain = simulate(fl_model, partitions, tmp_path / "plain", secure=False, weighted=False, central_noise_multiplier=0)
    secure = simulate(fl_model, partitions, tmp_path / "secure", secure=True, secagg_shares=1.0,
                      central_noise_multiplier=0)
    assert plain[1].accepted == secure[1].accepted == 4
    # Each device sends its delta rounded to a step (stochastically: error < step), weight 1, so the mean's
    # error is < step per coordinate as well.
    step = 2 * secagg_clipping_range(FederationConfig(clip_norm=CLIP, central_noise_multiplier=0)) / QUANTIZATION_RANGE
    tolerance = step + 1e-6  # and float32 rounding
    base_w, _ = base_head(fl_model)
    w_plain, b_plain = final_head(tmp_path / "plain")
    w_secure, b_secure = final_head(tmp_path / "secure")
    assert np.abs(w_plain - base_w).max() > 20 * tolerance  # the comparison is not trivially true
    np.testing.assert_allclose(w_secure, w_plain, rtol=0, atol=tolerance)
    np.testing.assert_allclose(b_secure, b_plain, rtol=0, atol=tolerance)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_a_failing_device_does_not_stop_the_round(fl_model, tmp_path, secure):
    """A device without text fails in the middle of the round (under SecAgg+: after sharing keys)."""
    partitions = user_partitions(5)
    partitions[2] = parts.Partition("empty", (), partitions[2].heldout)
    rows = simulate(fl_model, partitions, tmp_path, secure=secure, secagg_shares=1.0, central_noise_multiplier=0)
    assert rows[1].failures == 1
    assert rows[1].accepted == 4
    assert rows[1].fingerprint != rows[0].fingerprint


def test_the_default_is_secagg_with_central_dp_and_a_ledger(fl_model, tmp_path):
    """Nothing said about privacy: SecAgg+, central noise, adaptive clipping, epsilon beside every version."""
    from edgekit.federated.privacy import read_ledger
    from edgekit.flower.settings import FederationConfig

    assert FederationConfig().secure
    rows = simulate(fl_model, user_partitions(5), tmp_path, rounds=2, secagg_shares=1.0)
    assert [r.accepted for r in rows[1:]] == [5, 5]
    first, second = (read_ledger(tmp_path / "models" / f"round-00{i}.tflite") for i in (1, 2))
    assert first["secure_aggregation"] and "adaptive clipping" in first["mechanism"]
    assert first["cumulative"]["epsilon"] == pytest.approx(rows[1].epsilon)
    assert second["cumulative"]["epsilon"] == pytest.approx(rows[2].epsilon)
    assert second["cumulative"]["epsilon"] > first["cumulative"]["epsilon"]
    assert second["round"]["clip_norm"] == first["round"]["next_clip_norm"] != CLIP  # the bound moved
    assert second["parent_fingerprint"] == rows[1].fingerprint
