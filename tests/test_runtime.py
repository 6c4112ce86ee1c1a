"""The interpreter's lifetime: one at a time, freed when idle, made again with the same outputs."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.model import EdgeModel
from edgekit.modelfile import read_model_file
from edgekit.runtime import Runtime
from edgekit.vocab import Vocabulary
from tests.fixtures.texts import user_lines


@pytest.mark.parametrize("mode", ["int8", "none"])
def test_one_interpreter_serves_contexts_and_batches_and_is_made_again_with_the_same_outputs(trained_files, mode):
    file = read_model_file(trained_files[mode])
    runtime = Runtime(file, Vocabulary(file.vocab, file.metadata["personal_slots"]))
    ids = np.random.default_rng(0).integers(5, 180, (40, file.metadata["context_length"])).astype(np.int32)
    one = runtime.invoke(ids[:1]).values.copy()
    single = runtime._live
    features, logits = runtime.features_logits(ids)
    assert runtime._live is single  # resized for the batches, not a second interpreter
    assert np.array_equal(logits[0], one)
    runtime.release()
    assert runtime._live is None
    assert np.array_equal(runtime.invoke(ids[:1]).values, one)  # a new one-context interpreter
    assert runtime._live is not single
    again = runtime.features_logits(ids)
    assert np.array_equal(again[0], features) and np.array_equal(again[1], logits)


def test_while_a_personal_head_ranks_the_versions_interpreter_is_freed(trained_files, tmp_path):
    """The copy with the personal head ranks; the version's own interpreter is made again only when asked
    (the host path, ``probabilities``), and suggestions are the same with it freed or not."""
    m = EdgeModel.load(trained_files["int8"], state_dir=tmp_path, unsigned_local=True)
    assert m.personalize(user_lines(200)).adopted and m._p.head.on_host
    texts = [" ".join(line.split()[:n]) + " " for line in user_lines(20) for n in (1, 3)]
    first = [m.suggest(t) for t in texts]
    assert m._p._ranker() is not m._runtime and m._runtime._live is None
    m.probabilities(m.vocab.context_ids(["hi"], m.context_length)[None])
    assert m._runtime._live is not None
    m._suggester.clear()
    assert [m.suggest(t) for t in texts] == first
