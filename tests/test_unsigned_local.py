"""A device runs only what something vouches for (issue 15): the bundled files (pinned), the installed
version (checked at install), a version signed by a key it trusts; a file converted locally loads as
"unsigned, local" only when asked (``unsigned_local=True``, ``--unsigned-local``), never silently."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgekit.cli import main
from edgekit.errors import ModelFileError
from edgekit.federated.install import with_head
from edgekit.installed import trust_key
from edgekit.model import EdgeModel, default_model_path
from edgekit.modelfile import read_model_file, write_model_file
from edgekit.signing import SignatureError, public_pem, sign_model
from tests.fixtures.texts import user_lines

ASKS = "if you made it yourself, pass --unsigned-local (Python: unsigned_local=True); otherwise install a signed version"
NOT_TRUSTED = "is an unsigned local model file (not bundled, not signed by a key this device trusts)"


@pytest.fixture
def local(trained_files):
    return trained_files["int8"]


@pytest.fixture
def server(tmp_path):
    """A server's signing key and its public half in a PEM file (what `edgekit keygen` gives devices)."""
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "server.signing.pub"
    pub.write_bytes(public_pem(key.public_key()))
    return key, pub


@pytest.fixture
def signed(local, server, tmp_path):
    """The next version of the local model (another head), signed by ``server``."""
    file = read_model_file(local)
    weight, bias = EdgeModel.load(local, stateless=True, unsigned_local=True).base_head
    path = tmp_path / "v2.tflite"
    write_model_file(path, sign_model(with_head(file, (weight * 1.01, bias)), server[0]))
    return path


def test_a_local_file_is_refused_without_the_flag_and_says_what_to_do(local, tmp_path):
    for state in ({"stateless": True, "state_dir": tmp_path}, {"state_dir": tmp_path / "state"}):
        with pytest.raises(ModelFileError) as err:
            EdgeModel.load(local, **state)
        assert str(err.value) == f"{local} {NOT_TRUSTED}: {ASKS}"
    assert not (tmp_path / "state").exists()  # refused before anything is written


def test_a_local_file_loads_when_asked_and_says_so(local, tmp_path):
    m = EdgeModel.load(local, state_dir=tmp_path, unsigned_local=True)
    assert m.origin == "local" and m.info().origin == "local" and m.info().to_dict()["origin"] == "local"
    assert m.info().signed is False and m.info().parents == ()
    assert m.suggest("w3 w4 ")


def test_the_bundled_model_needs_no_flag(tmp_path):
    assert EdgeModel.load(stateless=True).info().origin == "bundled"
    assert EdgeModel.load(default_model_path(), state_dir=tmp_path).info().origin == "bundled"


def test_a_signed_version_loads_by_path_when_its_key_is_trusted(signed, server, tmp_path):
    with pytest.raises(SignatureError, match="trusts no server key yet.*verify_key="):
        EdgeModel.load(signed, state_dir=tmp_path)
    assert EdgeModel.load(signed, stateless=True, state_dir=tmp_path, verify_key=server[1]).origin == "signed"
    trust_key(tmp_path, server[1])
    info = EdgeModel.load(signed, state_dir=tmp_path).info()
    assert info.origin == "signed" and info.signed and info.to_dict()["signed"] is True
    assert EdgeModel.load(signed, stateless=True, state_dir=tmp_path).origin == "signed"


def test_a_version_signed_by_a_foreign_key_is_refused(signed, tmp_path):
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(SignatureError, match="which this device does not trust") as err:
        EdgeModel.load(signed, stateless=True, state_dir=tmp_path, verify_key=other)
    assert err.value.reason == "untrusted-key" and "unsigned_local" not in str(err.value)


def test_a_tampered_signed_version_is_refused_with_no_hint_to_load_it(signed, server, tmp_path):
    with zipfile.ZipFile(signed, "a") as z:  # one more entry: the signature covers every entry
        z.writestr("notes.txt", "added after signing")
    with pytest.raises(SignatureError, match="changed after it was signed") as err:
        EdgeModel.load(signed, stateless=True, state_dir=tmp_path, verify_key=server[1])
    assert err.value.reason == "bad-signature" and "unsigned_local" not in str(err.value)
    # Asked for explicitly, it is what any unvouched file is: local.
    assert EdgeModel.load(signed, stateless=True, state_dir=tmp_path, verify_key=server[1],
                          unsigned_local=True).origin == "local"


def test_the_installed_version_loads_by_default(local, signed, server, tmp_path):
    device = EdgeModel.load(local, state_dir=tmp_path, unsigned_local=True)
    device.install_global(signed, verify_key=server[1])
    assert device.origin == "installed"
    again = EdgeModel.load(state_dir=tmp_path)  # current-model.json: checked when it was installed
    assert again.origin == "installed" and again.fingerprint == read_model_file(signed).fingerprint
    assert np.allclose(again.base_head[0], device.base_head[0])
    assert EdgeModel.load(again.path, state_dir=tmp_path).origin == "installed"  # its copy, named by path


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_device_commands_refuse_a_local_file_without_the_flag(local, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(user_lines(200)) + "\n", encoding="utf-8")
    state = ("--state-dir", tmp_path / "state")
    for args in (["suggest", "-m", local, *state, "w3 "], ["info", "-m", local, *state],
                 ["evaluate", "-m", local, "--text", text], ["words", "-m", local, *state],
                 ["personalize", "-m", local, *state, "--text", text], ["reset", "--yes", "-m", local, *state]):
        refused = cli(*args)
        assert refused.exit_code == 1, (args, refused.output)
        assert f"{local} {NOT_TRUSTED}: {ASKS}" in refused.output, args
        accepted = cli(*args, "--unsigned-local")
        assert accepted.exit_code == 0, (args, accepted.output)


def test_info_shows_where_the_model_comes_from(local, signed, server, tmp_path):
    shown = cli("info", "-m", local, "--unsigned-local", "--state-dir", tmp_path)
    assert shown.exit_code == 0 and "origin             unsigned, local" in shown.output
    assert json.loads(cli("info", "--json", "--state-dir", tmp_path).output)["origin"] == "bundled"
    trust_key(tmp_path, server[1])
    assert json.loads(cli("info", "-m", signed, "--state-dir", tmp_path, "--json").output)["origin"] == "signed"


def test_installing_an_unsigned_file_on_a_fresh_device_says_it_is_not_signed(local, tmp_path):
    """No trusted key yet, and the file is unsigned: the answer is "not signed", not advice to pass a key
    (which could not help)."""
    out = CliRunner().invoke(main, ["install", str(local), "--state-dir", str(tmp_path / "device")])
    assert out.exit_code != 0 and "not signed" in out.output and "--verify-key" not in out.output, out.output


def test_an_install_taken_as_unsigned_local_trusts_no_key(local, signed, server, tmp_path):
    """--unsigned-local verifies nothing, so a --verify-key given beside it must not become trusted."""
    from edgekit.installed import trusted_keys

    device = tmp_path / "device"
    args = ["install", str(signed), "-m", str(local), "--state-dir", str(device), "--unsigned-local",
            "--verify-key", str(server[1])]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert trusted_keys(device) == []
