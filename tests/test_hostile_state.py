"""Hostile personal state and state paths (issue 15): one ``StateError`` that says to reset, never a traceback."""
from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit import EdgeModel
from edgekit.atomic import STALE_SECONDS, atomic_write_bytes
from edgekit.errors import StateError
from edgekit.personal.state import PersonalState, load_state, save_state, state_path

FP, F, V, FIRST_SLOT = "ab" * 16, 4, 20, 16
SKIP = list(range(5))


def good_state() -> PersonalState:
    st_ = PersonalState.empty(FP, F, V, SKIP)
    st_.delta_w.put(np.array([2, 7, 19]), np.full((F, 3), 0.5, np.float32))
    st_.phrases.add([2, 7, 8, 9, 3])
    st_.personal_words = {"zorblax": 16}
    st_.phrase_weight, st_.n_examples = 0.35, 12
    st_.heldout, st_.heldout_new = [["<s>", "w1", "</s>"]], [True]  # one kept line, written before or not
    return st_


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def rewrite(path: Path, **changes) -> Path:
    """The state at ``path`` with arrays replaced (``meta`` given as a dict is JSON-encoded)."""
    arrays = arrays_of(path)
    for key, value in changes.items():
        if key == "meta":
            value = np.frombuffer(json.dumps(value).encode(), np.uint8)
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


def load(path: Path) -> PersonalState:
    return load_state(path, FP, F, V, SKIP, FIRST_SLOT)


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "m.edgekit-state"
    save_state(path, good_state())
    return path


def meta_of(path: Path) -> dict:
    return json.loads(arrays_of(path)["meta"].tobytes())


def test_a_good_state_loads(saved):
    state = load(saved)
    assert state.personal_words == {"zorblax": 16} and state.phrase_weight == 0.35 and len(state.phrases) == 3
    assert np.array_equal(state.delta_w.dense(), good_state().delta_w.dense())


def test_a_version_1_state_with_whole_head_arrays_loads_by_column(saved):
    """Version 1 files hold the head weight's changes as whole [F, V] arrays; they load unchanged."""
    dense = good_state().delta_w.dense()
    rewrite(saved, delta_ids=None, delta_w=dense, meta={**meta_of(saved), "format_version": 1})
    state = load(saved)
    assert state.delta_w.ids.tolist() == [2, 7, 19] and np.array_equal(state.delta_w.dense(), dense)


@pytest.mark.parametrize("change, message", [
    (dict(delta_w=np.full((F, V), 1e38, np.float32)), "delta_w holds non-finite values or values over"),
    (dict(delta_b=np.full(V, np.nan, np.float32)), "delta_b holds non-finite"),
    (dict(delta_w=np.zeros((F, V), np.float64)), "type <f8"),
    (dict(delta_w=np.zeros((F, V + 1), np.float32)), "at most"),
    (dict(delta_w=np.zeros((F, 5), np.float32)), "shape"),
    (dict(delta_ids=np.array([7, 2, 19])), "not increasing column ids"),
    (dict(delta_ids=np.array([2, 7, V])), "not increasing column ids below"),
    (dict(delta_ids=np.array([2.0, 7.0, 19.0])), "type <f8"),
    (dict(delta_ids=None, delta_w=np.zeros((F, 3), np.float32)), "shape"),  # version 1: whole columns
    (dict(contrib_ids=np.array([2])), "the contribution lacks some of its arrays"),
    (dict(phrases_unigram=np.array([[99, 1]], np.int64)), "outside the vocabulary"),
    (dict(phrases_ngrams=np.array([[-5, 7, 8, 1]], np.int64)), "context ids outside"),
    (dict(phrases_ngrams=np.array([[7, 7, 8, 0]], np.int64)), "count outside"),
    (dict(heldout=np.frombuffer(b"\xff\xfe", np.uint8)), "corrupt"),
    (dict(extra=np.zeros(3)), "unexpected array"),
    (dict(delta_b=None), "missing array 'delta_b'"),
])
def test_damaged_arrays_are_refused(saved, change, message):
    rewrite(saved, **change)
    with pytest.raises(StateError, match=message) as err:
        load(saved)
    assert "edgekit reset" in str(err.value) and str(saved) in str(err.value)


@pytest.mark.parametrize("field, value", [
    ("phrase_weight", "nan"), ("phrase_weight", float("nan")), ("phrase_weight", 5.0), ("phrase_weight", True),
    ("personal_words", {"zorblax": 3}), ("personal_words", {"z" * 100: 16}), ("personal_words", ["x"]),
    ("personal_words", {"a b": 17}), ("n_examples", -1), ("n_examples", "12"), ("history", {"x": 1}),
])
def test_crafted_meta_is_refused(saved, field, value):
    rewrite(saved, meta={**meta_of(saved), field: value})
    with pytest.raises(StateError, match="edgekit reset"):
        load(saved)


def test_a_header_that_claims_a_huge_array_is_refused_before_reading(saved):
    """The .npy header is read first: 10**12 bytes claimed, a few bytes there."""
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000,), }"
    npy = b"\x93NUMPY\x01\x00" + len(header + b"\n").to_bytes(2, "little") + header + b"\n" + b"x" * 10
    arrays = arrays_of(saved)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, a in arrays.items():
            if k != "meta":
                ab = io.BytesIO()
                np.save(ab, a)
                z.writestr(f"{k}.npy", ab.getvalue())
        z.writestr("meta.npy", npy)
    saved.write_bytes(buf.getvalue())
    t0 = time.perf_counter()
    with pytest.raises(StateError, match="at most"):
        load(saved)
    assert time.perf_counter() - t0 < 0.5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_bytes_in_a_state_file_are_one_state_error(tmp_path_factory, data):
    """17 of 700 flips once ended in an uncaught zlib.error, and the keyboard could not start."""
    path = tmp_path_factory.mktemp("flip") / "s.edgekit-state"
    save_state(path, good_state())
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    path.write_bytes(bytes(raw))
    try:
        state = load(path)
    except StateError as e:
        assert "edgekit reset" in str(e) or "another model version" in str(e)
        return
    assert np.isfinite(state.delta_w.values).all()


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "a/b\\c", "..", "", "ünïcode name", "x" * 500])
def test_state_paths_stay_in_the_state_folder(tmp_path, name):
    path = state_path(tmp_path, name)
    assert path.parent == tmp_path and path.name.endswith(".edgekit-state")
    assert not path.name.startswith(".") and len(path.name) < 150


def test_a_model_named_to_escape_keeps_its_state_inside_and_reset_deletes_only_there(tmp_path):
    from edgekit.modelfile import read_model_file
    from tests.test_hostile_models import BUNDLED, parts, write

    bundled = read_model_file(BUNDLED)
    entries = parts(bundled)
    entries["edgekit.json"] = json.dumps({**json.loads(entries["edgekit.json"]), "name": "../../victim"}).encode()
    path = write(tmp_path / "evil.tflite", bundled.flatbuffer, entries)
    victim = tmp_path / "victim.edgekit-state"
    victim.write_text("not yours")
    state_dir = tmp_path / "a" / "state"
    m = EdgeModel.load(path, state_dir=state_dir, unsigned_local=True)
    assert m.state_file is not None and m.state_file.parent == state_dir
    m.save()
    assert m.state_file.exists()
    m.reset()
    assert not m.state_file.exists() and victim.read_text() == "not yours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "evil.tflite", "victim.edgekit-state"]


def test_stale_temporary_files_from_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "m.edgekit-state"
    stale, fresh, other = (tmp_path / ".m.edgekit-state.abcd1234.tmp", tmp_path / ".m.edgekit-state.efgh5678.tmp",
                           tmp_path / ".other.abcd1234.tmp")
    for p in (stale, fresh, other):
        p.write_bytes(b"x" * 1000)
    old = time.time() - STALE_SECONDS - 5
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write_bytes(target, b"new")
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # a save in progress, and another file's leftovers, are not ours


def test_an_exported_update_is_readable_only_by_its_owner(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from edgekit.federated import export_update

    model = EdgeModel.load(stateless=True)
    model.state.n_examples = 3  # as if it had learned something
    out = tmp_path / "u.edgekit-update"
    export_update(model, X25519PrivateKey.generate().public_key(), out)
    assert out.stat().st_mode & 0o777 == 0o600
