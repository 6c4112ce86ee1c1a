"""The round server, Flower's Message-API records and the ClientApp, without the simulation engine.

Fast, exact checks: the strategies get real Flower ``Message`` and
``FitRes`` objects, as Flower would hand them over, and the ClientApp is
called with the message a server sends; what the server does with bad
deltas must match the update-file path.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgekit.flower import partitions as parts

pytest.importorskip("flwr")
pytestmark = pytest.mark.flower


@pytest.fixture(autouse=True)
def flower_deprecations_are_errors(request):
    """Every test here fails if Flower reports that edgekit uses a deprecated API (but the check's own test)."""
    from tests.fixtures.flower import no_flower_deprecations

    if request.function is test_a_flower_deprecation_fails_the_check:
        yield
        return
    with no_flower_deprecations():
        yield


def test_a_flower_deprecation_fails_the_check():
    """The check above can fail: Flower's own deprecation notice trips it."""
    from flwr.supercore.logger import warn_deprecated_feature

    from tests.fixtures.flower import FlowerDeprecation, no_flower_deprecations

    with pytest.raises(FlowerDeprecation, match="an old thing"):
        with no_flower_deprecations():
            warn_deprecated_feature("an old thing")


def test_flower_is_within_the_tested_range():
    """The ``flower`` extra bounds flwr above; the installed Flower (constraints.txt) is inside the bounds."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    spec = next(Requirement(r) for r in extra["project"]["optional-dependencies"]["flower"]
                if Requirement(r).name == "flwr").specifier
    assert any(s.operator == "<" for s in spec), f"no upper bound on flwr: {spec}"
    assert version("flwr") in spec, f"flwr {version('flwr')} is outside the tested range {spec}"


def config(fl_model, tmp_path, **settings):
    from edgekit.flower.settings import FederationConfig

    return FederationConfig(model=str(fl_model), out_dir=str(tmp_path),
                            **{"clip_norm": 1.0, "signing_key": str(signing_key(tmp_path)), **settings})


def signing_key(folder, passphrase=None):
    """A signing pair as `edgekit keygen` makes it: ``server.signing.key`` and ``server.signing.pub`` in ``folder``."""
    from edgekit.federated.keys import generate_signing_key, signing_key_paths

    private, public = signing_key_paths(folder / "keys" / "server.key")
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True)
        generate_signing_key(private, public, passphrase=passphrase)
    return private


def server(fl_model, tmp_path, **settings):
    from edgekit.flower.rounds import RoundServer

    return RoundServer(config(fl_model, tmp_path, **settings))


def reply(node, arrays, n_examples, fingerprint, bit=1.0):
    from edgekit.flower.rounds import Reply

    return Reply(node, [*arrays, np.array([bit], np.float32)], n_examples, fingerprint, {})


def message(content, src, dst):
    """A Message as the SuperLink delivers it (outside a run, Flower cannot fill in the metadata itself)."""
    import time

    from flwr.app import Message, Metadata

    metadata = Metadata(run_id=1, message_id=f"{src}-{dst}", src_node_id=src, dst_node_id=dst, reply_to_message_id="",
                        group_id="", created_at=time.time(), ttl=600.0, message_type="train")
    return Message(metadata=metadata, content=content)


def good_delta(srv, value=0.001):
    F, V = srv.shared_shape
    return [np.full((F, V), value, np.float32), np.zeros(V, np.float32)]


def test_privacy_is_on_by_default_where_it_can_be():
    from edgekit.flower.settings import DEFAULT_CENTRAL_NOISE, FederationConfig

    default = FederationConfig()
    assert default.secure and default.central_noise_multiplier == DEFAULT_CENTRAL_NOISE and default.adaptive
    assert default.uniform_weights  # central DP and SecAgg+: every device counts once
    median = FederationConfig(aggregation="median")  # needs individual deltas: no SecAgg+, no central noise
    assert not median.secure and median.central_noise_multiplier == 0 and not median.adaptive
    local = FederationConfig(noise_multiplier=0.5)  # local noise replaces central noise, SecAgg+ stays
    assert local.secure and local.central_noise_multiplier == 0
    plain = FederationConfig(secure=False, central_noise_multiplier=0)
    assert not plain.uniform_weights and not plain.adaptive
    with pytest.raises(ValueError, match="fedavg"):
        FederationConfig(secure=True, aggregation="median")
    with pytest.raises(ValueError, match="central-noise-multiplier = 0"):
        FederationConfig(central_noise_multiplier=1.0, aggregation="trimmed-mean")


def test_bad_deltas_and_second_updates_are_refused(fl_model, tmp_path):
    from edgekit.federated.install import float_head
    from edgekit.modelfile import read_model_file

    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=0)
    F, V = srv.shared_shape
    fp = srv.fingerprint
    good = good_delta(srv)
    srv.start_round(1, sampled=8, available=8)
    replies = [
        reply(1, good, 100, fp),
        reply(2, [2 * a for a in good], 300, fp),
        reply(2, [50 * a for a in good[:1]] + good[1:], 10_000, fp),           # the same device again
        reply(3, good, 100, "0" * 32),                                             # another model version
        reply(4, [np.ones((F, V), np.float32), np.zeros(V, np.float32)], 100, fp),  # over the clip norm
        reply(5, [np.full((F, V), np.nan, np.float32), np.zeros(V, np.float32)], 100, fp),
        reply(6, [np.zeros((F, V - 1), np.float32), np.zeros(V - 1, np.float32)], 100, fp),
        reply(7, good, 0, fp),                                                     # learned nothing
    ]
    assert srv.aggregate(1, replies)
    stats = srv.pending
    assert stats.accepted == 2 and stats.failures == 1  # node 8 never answered
    assert stats.rejected == {"duplicate-device": 1, "wrong-model": 1, "over-norm": 1, "not-finite": 1,
                              "wrong-shape": 1}
    new = read_model_file(tmp_path / "round-001.tflite")
    assert new.metadata["parent_fingerprint"] == fp and new.fingerprint == srv.fingerprint != fp
    # weighted FedAvg (plain, no DP): (100 * 0.001 + 300 * 0.002) / 400
    new_head = float_head(tmp_path / "round-001.tflite")  # the server's float copy of the version's head
    np.testing.assert_allclose(new_head[0][:, :V] - base_head(fl_model)[0][:, :V], 0.00175, atol=1e-6)
    assert not (tmp_path / "round-001.privacy.json").exists()  # no noise, no ledger


def test_a_huge_example_claim_weighs_at_most_twice_the_rounds_median(fl_model, tmp_path):
    """One device claiming 1e9 examples (capped at 10,000 before) against four honest ones of 300 each: its
    weight is twice the median claim (600), not 10,000 (89% of the round)."""
    from edgekit.federated.install import float_head

    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=0)
    V = srv.shared_shape[1]
    srv.start_round(1, sampled=5, available=5)
    honest = [reply(n, good_delta(srv, 0.001), 300, srv.fingerprint) for n in range(1, 5)]
    assert srv.aggregate(1, [*honest, reply(9, good_delta(srv, 0.01), 10**9, srv.fingerprint)])
    change = float_head(tmp_path / "round-001.tflite")[0][:, :V] - base_head(fl_model)[0][:, :V]
    np.testing.assert_allclose(change, (4 * 300 * 0.001 + 600 * 0.01) / 1800, atol=1e-6)


def test_every_version_is_signed_and_a_device_installs_it(fl_model, tmp_path, monkeypatch):
    """The server signs each version with its run config's key, so `edgekit install` takes it without
    --unsigned-local; changed after signing, it is refused. No key, no server."""
    from dataclasses import replace

    from click.testing import CliRunner

    from edgekit.cli import main
    from edgekit.errors import KeyFileError
    from edgekit.modelfile import read_model_file, write_model_file
    from edgekit.signing import load_verify_keys, verify_key_id, verify_model

    key = signing_key(tmp_path, passphrase=b"round secret")  # encrypted, as `keygen --passphrase-file` makes it
    (tmp_path / "passphrase").write_text("round secret\n")
    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=0,
                 passphrase_file=str(tmp_path / "passphrase"))
    srv.start_round(1, sampled=2, available=2)
    assert srv.aggregate(1, [reply(n, good_delta(srv), 10, srv.fingerprint) for n in (1, 2)])
    version, verify = tmp_path / "round-001.tflite", key.with_suffix(".pub")
    trusted = load_verify_keys(verify)
    assert verify_model(read_model_file(version), trusted) == verify_key_id(trusted[0])

    new = read_model_file(version)
    flat = bytearray(new.flatbuffer)
    flat[len(flat) // 2] ^= 0x01
    write_model_file(tmp_path / "tampered.tflite", replace(new, flatbuffer=bytes(flat)))

    def install(path):
        return CliRunner().invoke(main, ["install", str(path), "-m", str(fl_model), "--verify-key", str(verify),
                                         "--state-dir", str(tmp_path / "device"), "--json"])

    refused = install(tmp_path / "tampered.tflite")
    assert refused.exit_code != 0 and "changed after it was signed" in refused.output
    done = install(version)
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["installed"] == srv.fingerprint and report["trust"] == f"signed by {verify_key_id(trusted[0])}"

    with pytest.raises(ValueError, match="set signing-key"):
        server(fl_model, tmp_path, signing_key="")
    monkeypatch.delenv("EDGEKIT_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyFileError, match="passphrase-protected"):
        server(fl_model, tmp_path, passphrase_file="")


def base_head(model):
    from edgekit.model import EdgeModel

    return EdgeModel.load(model, stateless=True, unsigned_local=True).base_head


def test_central_dp_writes_the_ledger_and_adapts_the_clip(fl_model, tmp_path):
    from edgekit.federated.privacy import describe_ledger, dp_epsilon, ledger_info, read_ledger

    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=1.0, clip_norm=1.0, fraction=0.5)
    fp0 = srv.fingerprint
    for rnd in (1, 2):
        srv.start_round(rnd, sampled=100, available=200)
        # every device was far over the bound: the bound must grow (target quantile 0.5)
        assert srv.aggregate(rnd, [reply(n, good_delta(srv, 1e-4), 50, srv.fingerprint, bit=0.0)
                                   for n in range(100)])
    assert srv.clip_norm > 1.0
    ledger = read_ledger(tmp_path / "round-002.tflite")
    assert ledger["delta"] == 1e-10 and ledger["round"]["round"] == 2 and ledger["cumulative"]["rounds"] == 2
    assert ledger["round"]["epsilon"] == pytest.approx(dp_epsilon(1.0, sampling_rate=0.5, delta=1e-10).epsilon)
    assert ledger["cumulative"]["epsilon"] == pytest.approx(
        dp_epsilon(1.0, sampling_rate=0.5, rounds=2, delta=1e-10).epsilon)
    assert ledger["round"]["epsilon"] < ledger["cumulative"]["epsilon"] < math.inf
    assert read_ledger(tmp_path / "round-001.tflite")["parent_fingerprint"] == fp0
    line = describe_ledger(ledger)
    assert f"{ledger['cumulative']['epsilon']:.3g} over 2 round(s)" in line and "1e-10" in line
    assert read_ledger(tmp_path / "no-such.tflite") is None
    assert ledger_info(tmp_path / "round-002.tflite") == {"privacy": line} and ledger_info(None) == {}
    (tmp_path / "broken.privacy.json").write_text("{")
    with pytest.raises(ValueError, match="unreadable privacy ledger"):
        read_ledger(tmp_path / "broken.tflite")


def test_a_secagg_aggregate_over_the_clip_bound_is_refused(fl_model, tmp_path):
    """Issue 15: a SecAgg+ sum of norm 5,001 under a clip of 20 was installed; a mean of clipped deltas never is."""
    srv = server(fl_model, tmp_path, clip_norm=20.0, central_noise_multiplier=0)
    assert srv.config.secure
    F, V = srv.shared_shape
    huge = [np.full((F, V), 5001 / math.sqrt(F * V), np.float32), np.zeros(V, np.float32)]
    srv.start_round(1, sampled=3, available=3)
    assert not srv.aggregate_secure(1, [reply(n, huge, 1, srv.fingerprint) for n in range(3)])
    assert srv.pending.rejected == {"over-norm": 3} and not (tmp_path / "round-001.tflite").exists()
    within = [np.full((F, V), 19.9 / math.sqrt(F * V), np.float32), np.zeros(V, np.float32)]
    srv.start_round(1, sampled=3, available=3)
    assert srv.aggregate_secure(1, [reply(n, within, 1, srv.fingerprint) for n in range(3)])


def test_the_message_api_strategy_reads_replies_by_node(fl_model, tmp_path):
    """Replies as Flower delivers them: one Message per node, the node id from Flower's metadata."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from edgekit.flower.strategy import EdgeStrategy

    strategy = EdgeStrategy(server(fl_model, tmp_path, secure=False, central_noise_multiplier=0))
    srv = strategy.server
    srv.start_round(1, sampled=2, available=2)

    def answer(node):
        content = RecordDict({"arrays": ArrayRecord([*good_delta(srv), np.ones(1, np.float32)]),
                              "metrics": MetricRecord({"num-examples": 10, "personal-top3": 0.5}),
                              "info": ConfigRecord({"fingerprint": srv.fingerprint})})
        return message(content, src=node, dst=0)

    arrays, metrics = strategy.aggregate_train(1, [answer(11), answer(11), answer(12)])
    assert arrays is not None and metrics["accepted"] == 2
    assert srv.pending.rejected == {"duplicate-device": 1} and srv.pending.personal_top3 == 0.5


def test_the_client_app_answers_a_train_message(fl_model, tmp_path):
    """The device side through ``ClientApp.__call__``: Message API records in, a clipped delta out."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

    from edgekit.flower.client_app import app
    from tests.fixtures.texts import user_lines

    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=0, clip_norm=0.01, epochs=1)
    part = parts.Partition("u", tuple(user_lines(40, seed=1)), tuple(user_lines(10, seed=2)))
    parts.write_partition(part, tmp_path / "clients" / parts.client_folder_name(0))
    request = message(RecordDict({"arrays": ArrayRecord([np.asarray(a) for a in srv.head]),
                                  "config": ConfigRecord(srv.start_round(1, 1, 1))}), src=0, dst=5)
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config={"model": str(fl_model), "partitions-dir": str(tmp_path / "clients")})
    out = app(request, context)
    dW, db, bit = out.content["arrays"].to_numpy_ndarrays()
    assert out.content["info"]["fingerprint"] == srv.fingerprint
    assert out.content["metrics"]["num-examples"] > 0 and bit.tolist() == [0.0]  # clipped: norm was over 0.01
    assert math.sqrt(float((dW ** 2).sum() + (db ** 2).sum())) == pytest.approx(0.01, rel=1e-4)
    # A real device's paths never come from the server's run config.
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(),
                      run_config={"model": str(fl_model), "text": "/etc/passwd"})
    with pytest.raises(ValueError, match="no model"):
        app(request, context)


def test_run_config_reads_the_noise_names_and_refuses_the_old_ones():
    """An old ``local-noise`` key would otherwise be ignored, and the round would run without noise."""
    from edgekit.flower.settings import FederationConfig

    config = FederationConfig.from_run_config({"noise-multiplier": 0.5, "clip-norm": 2.0})
    assert (config.noise_multiplier, config.clip_norm, config.central_noise_multiplier) == (0.5, 2.0, 0.0)
    assert FederationConfig.from_run_config({"central-noise-multiplier": 1.1}).central_noise_multiplier == 1.1
    for old, new in (("local-noise", "noise-multiplier"), ("central-noise", "central-noise-multiplier")):
        with pytest.raises(ValueError, match=f"'{old}' is now '{new}'"):
            FederationConfig.from_run_config({old: 1.0})


def test_the_simulation_app_carries_every_setting(tmp_path):
    """The app folder's run config is the FederationConfig: read back, it is the same config."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from edgekit.flower.settings import FederationConfig
    from edgekit.flower.simulate import write_app

    config = FederationConfig(model="/m.tflite", rounds=5, clip_norm=7.5, secure=False, aggregation="median",
                              signing_key="/keys/server.signing.key", passphrase_file="/keys/passphrase")
    folder = write_app(tmp_path / "app", config, {"partitions-dir": "/p"})
    toml = tomllib.loads((folder / "pyproject.toml").read_text())
    run_config = toml["tool"]["flwr"]["app"]["config"]
    assert FederationConfig.from_run_config(run_config) == config and run_config["partitions-dir"] == "/p"
    assert toml["tool"]["flwr"]["app"]["components"]["serverapp"] == "edgekit.flower.server_app:app"


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


def test_ledger_json_is_plain(fl_model, tmp_path):
    """The ledger is for people and other tools too: plain JSON, finite numbers."""
    srv = server(fl_model, tmp_path, secure=False, central_noise_multiplier=2.0, adaptive_clipping=False)
    srv.start_round(1, sampled=10, available=10)
    assert srv.aggregate(1, [reply(n, good_delta(srv, 1e-4), 5, srv.fingerprint) for n in range(10)])
    ledger = json.loads((tmp_path / "round-001.privacy.json").read_text())
    assert ledger["mechanism"] == "central DP, Gaussian, fixed clipping" and ledger["round"]["clip_norm"] == 1.0


def test_simulate_checks_its_signing_key_before_flower_starts(tmp_path, monkeypatch):
    """A key the run could not sign with is named at once, not from inside Flower's log minutes later."""
    from click.testing import CliRunner

    from edgekit.cli import main

    key = signing_key(tmp_path, passphrase=b"secret")
    for passphrase, message in ((None, "passphrase-protected"), ("wrong", "the passphrase is wrong")):
        if passphrase is None:
            monkeypatch.delenv("EDGEKIT_KEY_PASSPHRASE", raising=False)
        else:
            monkeypatch.setenv("EDGEKIT_KEY_PASSPHRASE", passphrase)
        result = CliRunner().invoke(main, ["simulate", "--signing-key", str(key), "-o", str(tmp_path / "sim")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "sim").exists()
