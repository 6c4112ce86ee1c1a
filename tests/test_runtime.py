"""What a process holds between uses: one interpreter at a time, freed when idle, no float head while a
personal head's flatbuffer copy ranks (and only the columns learning trains while it learns), head changes
kept by column; each made again with the same values."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.flatbuffer_head import without_ranking
from edgekit.head import Columns
from edgekit.model import EdgeModel
from edgekit.modelfile import read_model_file
from edgekit.runtime import Runtime, load_interpreter
from edgekit.vocab import Vocabulary
from tests.fixtures.texts import user_lines


@pytest.mark.parametrize("mode", ["int8", "dynamic", "none"])
def test_one_interpreter_serves_contexts_and_batches_and_is_made_again_with_the_same_outputs(trained_files, mode):
    file = read_model_file(trained_files[mode])
    runtime = Runtime(file, Vocabulary(file.vocab, file.metadata["personal_slots"]))
    ids = np.random.default_rng(0).integers(5, 180, (40, file.metadata["context_length"])).astype(np.int32)
    one = runtime.invoke(ids[:1]).values.copy()
    single = runtime._live
    features, logits = runtime.features_logits(ids)
    # Batches run a copy without the word ranking, made after the one-context interpreter is freed: one at a time.
    assert runtime._live is not single and runtime._batched
    assert {d["index"] for d in runtime._live.get_output_details()} == {runtime.io.features, runtime.io.logits}
    assert np.array_equal(logits[0], one)
    assert np.array_equal(features[:1], runtime.invoke_features(ids[:1])[0][None])
    runtime.release()
    assert runtime._live is None
    assert np.array_equal(runtime.invoke(ids[:1]).values, one)  # a new one-context interpreter
    assert runtime._live is not single
    again = runtime.features_logits(ids)
    assert np.array_equal(again[0], features) and np.array_equal(again[1], logits)


@pytest.mark.parametrize("mode", ["int8", "dynamic", "none"])
def test_the_copy_without_the_word_ranking_outputs_what_the_whole_graph_does(trained_files, mode):
    """Features and logits to the bit, the ranking's operators gone; a copy already cut has nothing left to cut."""
    file = read_model_file(trained_files[mode])
    runtime = Runtime(file, Vocabulary(file.vocab, file.metadata["personal_slots"]))
    io = runtime.io
    cut = without_ranking(file.flatbuffer, io.features, io.logits)
    assert cut is not None and len(cut) == len(file.flatbuffer)
    ids = np.random.default_rng(1).integers(5, 180, (16, file.metadata["context_length"])).astype(np.int32)
    outputs = []
    for content in (file.flatbuffer, cut):
        interp, _ = load_interpreter(content)
        interp.resize_tensor_input(io.tokens, list(ids.shape))
        interp.allocate_tensors()
        interp.set_tensor(io.tokens, ids)
        interp.invoke()
        outputs.append((interp.get_tensor(io.features), interp.get_tensor(io.logits), len(interp._get_ops_details())))
    (f0, l0, ops0), (f1, l1, ops1) = outputs
    assert np.array_equal(f0, f1) and np.array_equal(l0, l1) and ops1 < ops0
    assert without_ranking(cut, io.features, io.logits) is None


def test_while_a_personal_head_ranks_the_versions_interpreter_is_freed(trained_files, tmp_path):
    """The copy with the personal head ranks; the version's own interpreter is made again only when asked
    (the host path, ``probabilities``), and suggestions are the same with it freed or not."""
    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path, unsigned_local=True)
    assert m.personalize(user_lines(200)).adopted and m._p.head.on_host
    texts = [" ".join(line.split()[:n]) + " " for line in user_lines(20) for n in (1, 3)]
    first = [m.suggest(t) for t in texts]
    assert m._p._ranker() is not m._runtime and m._runtime._live is None
    assert m._p.head._base is None  # nor the float head (2.6 MB)
    m.probabilities(m.vocab.context_ids(["hi"], m.context_length)[None])
    assert m._runtime._live is not None
    m._suggester.clear()
    assert [m.suggest(t) for t in texts] == first


def test_the_head_summed_in_a_fresh_read_of_the_base_is_the_held_base_plus_the_delta(trained_files, tmp_path):
    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path, unsigned_local=True)
    assert m.personalize(user_lines(200)).adopted and m._p.head.on_host
    head = m._p.head
    head.release()
    fresh = head.weights  # the delta added into a new read of the base: the base is not held
    assert head._base is None
    base = head.base
    held = head.weights
    assert fresh[0] is not base[0]
    for a, b, w0, d in zip(fresh, held, base, (m.state.delta_w.dense(), m.state.delta_b), strict=True):
        assert np.array_equal(a, b) and np.array_equal(b, w0 + d)


@pytest.mark.parametrize("mode", ["int8", "dynamic", "none"])
def test_columns_of_the_head_are_the_whole_heads_columns_and_need_no_interpreter(trained_files, tmp_path, mode):
    """Learning reads only the columns it trains, after it frees the interpreter: the same numbers as the
    whole float heads (personal and the version's), with no interpreter made for them."""
    m = EdgeModel.load(trained_files[mode], state_dir=tmp_path, unsigned_local=True)
    assert m.personalize(user_lines(200)).adopted and m._p.head.on_host
    head, columns = m._p.head, np.array([3, 7, 40, 41, 150])
    head.release()
    bias = head.bias()  # reads the stored head while the interpreter is alive
    m._runtime.release()
    personal, base = head.columns(columns), head.columns(columns, personal=False)
    assert m._runtime._live is None and head._base is None
    whole, whole_base = head.weights, head.base
    assert np.array_equal(bias, whole[1])
    for part, full in ((personal, whole), (base, whole_base)):
        assert np.array_equal(part[0], full[0][:, columns]) and np.array_equal(part[1], full[1][columns])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_change_kept_by_column_reads_and_writes_as_the_whole_array_does(data):
    """The personal delta and the contribution keep only their columns (``Columns``); every read and
    write is the whole [F, V] array's, bit for bit."""
    rows, width = 3, 12
    columns, dense = Columns.zeros(rows, width), np.zeros((rows, width), np.float32)
    some = st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True).map(np.array)
    for _ in range(data.draw(st.integers(1, 6))):
        cols, add = data.draw(some), data.draw(st.booleans())
        values = np.random.default_rng(data.draw(st.integers(0, 99))).normal(size=(rows, len(cols)))
        values = values.astype(np.float32)
        columns.put(cols, values, add=add)
        if add:
            dense[:, cols] += values
        else:
            dense[:, cols] = values
        assert np.array_equal(columns.dense(), dense) and list(columns.ids) == sorted(set(columns.ids))
        probe = data.draw(some)
        assert np.array_equal(columns.take(probe), dense[:, probe])
        assert np.array_equal(columns.dense(width // 2), dense[:, : width // 2])
    gone = data.draw(st.integers(0, width - 1))
    dense[:, gone] = 0
    assert np.array_equal(columns.without(gone).dense(), dense)
