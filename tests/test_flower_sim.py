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
from tests.fixtures.texts import user_lines

flwr = pytest.importorskip("flwr")
pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.flower, pytest.mark.timeout(600)]
# A few hundred examples per device: train like `edgekit personalize` does (>= 150 steps).
DEVICE_TRAINING = {"epochs": 4, "min_steps": 150, "learning_rate": 3e-3}
CLIP = 20.0  # the tiny model's deltas have norms near 16: clip, but not to nothing
MIN_EXAMPLES = 100  # each device trains on 40 lines of >= 4 words (a fifth of its 50 lines is held out)


@pytest.fixture(autouse=True)
def fresh_ray_and_environment():
    """Each simulation starts its own Ray cluster and leaves the process as it found it.

    Flower starts Ray only when none is running in the process (``ray.is_initialized()``)
    and shuts it down when its runtime ends; a simulation that stops after ``ray.init``
    but before that runtime owns the cluster (its backend refusing a setting) leaves
    Ray running, and the next test would build its actors on that cluster. Flower also
    writes ``PYTHONPATH`` (the whole ``sys.path``, once more on every run) into
    ``os.environ``, and ``simulate.run`` sets its own variables there: later tests'
    subprocesses must not inherit them.
    """
    import ray

    ray.shutdown()  # a no-op unless an earlier test left one running
    saved = dict(os.environ)
    yield
    ray.shutdown()
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
    return sim.run(config, partitions, workdir, cpus=2)


def final_model(workdir, rounds: int = 1):
    from edgekit.modelfile import read_model_file

    return read_model_file(workdir / "models" / f"round-{rounds:03d}.tflite")


def final_head(workdir, rounds: int = 1):
    """The float head the server keeps for that round's version (``federated.install.float_head``)."""
    from edgekit.federated.install import float_head

    return float_head(workdir / "models" / f"round-{rounds:03d}.tflite")


def base_head(model):
    from edgekit.model import EdgeModel

    return EdgeModel.load(model, stateless=True).base_head


def test_rounds_improve_the_global_model(fl_model, tmp_path):
    rows = simulate(fl_model, user_partitions(4), tmp_path, rounds=2)
    assert [r.round for r in rows] == [0, 1, 2]
    assert all(r.sampled == 4 and r.failures == 0 and not r.rejected for r in rows[1:])
    assert rows[1].accepted == 4  # later, a device whose new head does not help its own text sends nothing
    assert rows[2].global_top3 > rows[1].global_top3 > rows[0].global_top3, rows
    assert rows[1].personal_top3 > rows[0].global_top3  # a device beats the global model on its own text
    assert len({r.fingerprint for r in rows}) == 3  # every round is a new model version
    assert final_model(tmp_path, 2).metadata["parent_fingerprint"] == rows[1].fingerprint


def test_secagg_matches_plain_fedavg_within_quantization(fl_model, tmp_path):
    from edgekit.flower.server_app import QUANTIZATION_RANGE
    from edgekit.flower.settings import FederationConfig

    partitions = user_partitions(4)
    plain = simulate(fl_model, partitions, tmp_path / "plain")
    secure = simulate(fl_model, partitions, tmp_path / "secure", secure=True, secagg_shares=1.0)
    assert plain[1].accepted == secure[1].accepted == 4
    # Each device sends round(r * delta / step) with r = weight / max_examples
    # (also rounded, to 1/Q): error <= step/2 + clip/Q per device, and the sum
    # is divided by sum(r) >= n * MIN_EXAMPLES / max_examples.
    step = 2 * CLIP / QUANTIZATION_RANGE
    tolerance = (step / 2 + CLIP / QUANTIZATION_RANGE) * FederationConfig().max_examples / MIN_EXAMPLES
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
    rows = simulate(fl_model, partitions, tmp_path, secure=secure, secagg_shares=1.0)
    assert rows[1].failures == 1
    assert rows[1].accepted == 4
    assert rows[1].fingerprint != rows[0].fingerprint
