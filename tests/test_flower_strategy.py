"""EdgeStrategy and partitions without the simulation engine: fast, exact checks.

The strategy gets real Flower ``FitRes`` objects, as the fit workflow would
hand them over; what it does with bad deltas must match the update-file path.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.flower import partitions as parts

pytest.importorskip("flwr")
pytestmark = pytest.mark.flower


def fit_res(arrays, n_examples, fingerprint):
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n_examples,
                        {"fingerprint": fingerprint})


@pytest.fixture
def strategy(fl_model, tmp_path):
    from edgekit.flower.settings import FederationConfig
    from edgekit.flower.strategy import EdgeStrategy

    return EdgeStrategy(FederationConfig(model=str(fl_model), out_dir=str(tmp_path), clip_norm=1.0))


def test_bad_deltas_are_refused_like_update_files(strategy, tmp_path):
    from edgekit.federated.install import float_head
    from edgekit.modelfile import read_model_file

    F, V = strategy.shared_shape
    fp = strategy.fingerprint
    good = [np.full((F, V), 0.001, np.float32), np.zeros(V, np.float32)]
    results = [
        fit_res(good, 100, fp),
        fit_res([2 * a for a in good], 300, fp),
        fit_res(good, 100, "0" * 32),                                              # another model version
        fit_res([np.ones((F, V), np.float32), np.zeros(V, np.float32)], 100, fp),  # over the clip norm
        fit_res([np.full((F, V), np.nan, np.float32), np.zeros(V, np.float32)], 100, fp),
        fit_res([np.zeros((F, V - 1), np.float32), np.zeros(V - 1, np.float32)], 100, fp),
        fit_res(good, 0, fp),                                                      # learned nothing
    ]
    strategy._pending.sampled = len(results)
    params, metrics = strategy.aggregate_fit(1, results, [])
    stats = strategy._pending
    assert stats.accepted == 2
    assert stats.rejected == {"wrong-model": 1, "over-norm": 1, "not-finite": 1, "wrong-shape": 1}
    new = read_model_file(tmp_path / "round-001.tflite")
    new_head = float_head(tmp_path / "round-001.tflite")
    assert new.metadata["parent_fingerprint"] == fp and new.fingerprint == strategy.fingerprint != fp
    # weighted FedAvg: (100 * 0.001 + 300 * 0.002) / 400
    from flwr.common import parameters_to_ndarrays

    W = parameters_to_ndarrays(params)[0]
    np.testing.assert_allclose(W[:, :V] - new_head[0][:, :V], 0)
    np.testing.assert_allclose(new_head[0][:, :V] - base_head(strategy)[0][:, :V], 0.00175, atol=1e-6)


def base_head(strategy):
    from edgekit.model import EdgeModel

    return EdgeModel.load(strategy.config.model, stateless=True).base_head


def test_secure_aggregation_refuses_robust_modes():
    from edgekit.flower.settings import FederationConfig

    with pytest.raises(ValueError, match="fedavg"):
        FederationConfig(secure=True, aggregation="median")
    with pytest.raises(ValueError, match="central noise"):
        FederationConfig(central_noise_multiplier=1.0, aggregation="trimmed-mean")


def test_run_config_reads_the_noise_names_and_refuses_the_old_ones():
    """An old ``local-noise`` key would otherwise be ignored, and the round would run without noise."""
    from edgekit.flower.settings import FederationConfig

    config = FederationConfig.from_run_config({"noise-multiplier": 0.5, "clip-norm": 2.0})
    assert (config.noise_multiplier, config.clip_norm, config.central_noise_multiplier) == (0.5, 2.0, 0.0)
    assert FederationConfig.from_run_config({"central-noise-multiplier": 1.1}).central_noise_multiplier == 1.1
    for old, new in (("local-noise", "noise-multiplier"), ("central-noise", "central-noise-multiplier")):
        with pytest.raises(ValueError, match=f"'{old}' is now '{new}'"):
            FederationConfig.from_run_config({old: 1.0})


def test_partitions_are_contiguous_stretches_of_one_writer():
    sources = {"a": [f"a{i} x y" for i in range(100)], "b": [f"b{i} x y z w" for i in range(100)]}
    clients = parts.make_partitions(sources, 4, train_words=30, heldout_words=9)
    assert [c.name for c in clients] == ["a@0", "b@0", "a@13", "b@8"]
    for c in clients:
        lines = c.train + c.heldout
        assert len({ln[0] for ln in lines}) == 1  # one writer per client: non-IID
        first = int(lines[0].split()[0][1:])
        assert [int(ln.split()[0][1:]) for ln in lines] == list(range(first, first + len(lines)))
    assert not set(clients[0].train + clients[0].heldout) & set(clients[2].train + clients[2].heldout)


def test_a_used_up_writer_starts_over():
    clients = parts.make_partitions({"short": ["one two three"] * 5}, 3, train_words=9, heldout_words=3)
    assert [c.name for c in clients] == ["short@0", "short@0", "short@0"]
    assert all(c.train and c.heldout for c in clients)
