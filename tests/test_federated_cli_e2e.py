"""The federated CLI on real .tflite files: `export-update` on devices, `aggregate` on the server,
`install_global` back on a device."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.federated import generate_keypair
from edgekit.federated.keys import generate_signing_key
from edgekit.federated.hazmat import parse_update
from edgekit.model import EdgeModel
from tests.fixtures.texts import user_lines

pytestmark = pytest.mark.slow
CLIP = "20"  # about the norm of one device's delta on this tiny model (~16)


def _cli(*args, env=None):
    out = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_cli_round_on_real_models(trained_files, tmp_path):
    base = trained_files["none"]
    generate_keypair(tmp_path / "server.key")
    generate_signing_key(tmp_path / "server.signing.key", tmp_path / "server.signing.pub")
    for i in range(4):
        state = tmp_path / f"device{i}"
        EdgeModel.load(base, state_dir=state, unsigned_local=True).personalize(user_lines(150, seed=10 + i))
        shutil.copytree(state, tmp_path / f"device{i}-int8")  # an export consumes what it carries
        for encoding, state in (("float16", state), ("int8", tmp_path / f"device{i}-int8")):
            out = tmp_path / f"updates-{encoding}" / f"{i}.edgekit-update"
            report = _cli("export-update", "--server-key", tmp_path / "server.key.pub", "--model", base, "--unsigned-local",
                          "-o", out,
                          "--clip-norm", CLIP, "--encoding", encoding, "--json", env={"EDGEKIT_STATE_DIR": str(state)})
            header = parse_update(out.read_bytes())[0]
            assert report["update_id"] == header.update_id and header.n_examples > 0
    held_out = user_lines(60, seed=99)
    _cli("aggregate", "--key", tmp_path / "server.key", "--model", base, tmp_path / "updates-int8",
         "-o", tmp_path / "next-int8.tflite", "--clip-norm", CLIP, "--json")

    result = _cli("aggregate", "--key", tmp_path / "server.key", "--model", base, tmp_path / "updates-float16",
                  "-o", tmp_path / "next.tflite", "--clip-norm", CLIP, "--json")
    assert result["accepted"] == 4 and not result["rejected"]

    old = EdgeModel.load(base, stateless=True, unsigned_local=True)
    new = EdgeModel.load(tmp_path / "next.tflite", stateless=True, unsigned_local=True)
    assert new.fingerprint == result["fingerprint"] != old.fingerprint
    slots = old.vocab.first_slot
    assert np.array_equal(new.base_head[0][:, slots:], old.base_head[0][:, slots:])  # personal slots untouched
    top3 = new.evaluate(held_out).top3
    assert top3 > old.evaluate(held_out).top3 + 0.1
    int8 = EdgeModel.load(tmp_path / "next-int8.tflite", stateless=True, unsigned_local=True).evaluate(held_out).top3
    print(f"global top-3: base {old.evaluate(held_out).top3:.3f}, float16 {top3:.3f}, int8 {int8:.3f}")
    assert abs(int8 - top3) <= 0.02  # what the int8 encoding costs

    device = EdgeModel.load(base, state_dir=tmp_path / "device0", unsigned_local=True)
    before = device.evaluate(held_out).top3
    device.install_global(tmp_path / "next.tflite", verify_key=tmp_path / "server.signing.pub")
    assert device.fingerprint == new.fingerprint
    assert device.evaluate(held_out).top3 >= before - 0.05  # personalization stays sensible
