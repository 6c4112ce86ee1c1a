"""Shared fixtures, the test profiles, and the markers that say what a test needs.

Two kinds of model for the tests:

- ``trained_files`` / ``fl_model``: a tiny model *trained* on a known
  language, converted in three quantization modes and committed under
  ``tests/fixtures/`` (rebuilt by ``python -m tests.fixtures.make_tiny_model``).
  Device, personalization, federated and Flower tests use it, so they run
  without TensorFlow.
- ``tiny_model`` and friends: an untrained Keras model built on the spot, for
  the converter's own tests (TensorFlow, imported inside the fixtures).

Markers (registered in pyproject.toml) name the extra a test needs: ``convert``
(TensorFlow), ``flower`` (Flower and Ray), ``dp`` (dp-accounting, the server's
privacy report). The device-only venv runs ``-m "not convert and not flower and not dp"``.

Profiles, chosen by ``EDGEKIT_TEST_PROFILE`` (scripts/test.sh and .ci/run set it):
``full`` fails at once when TensorFlow, Flower, Ray, dp-accounting or pexpect is
missing, so no test of the full run can be skipped for a missing extra; ``device``
fails at once when one of the extras *is* importable, so the device subset proves
it needs none of them.

Test modules import fixtures from here only; plain helpers (text generators)
live in the ``tests.fixtures`` package.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.make_tiny_model import MODES, model_path

TINY = dict(context_length=4, embed_dim=8, hidden=16, feature_dim=12)
N_WORDS, PERSONAL_SLOTS = 250, 4  # head 12 x 259 > 1024 weights: big enough to be quantized

# What each profile requires to be present (full) or absent (device).
FULL_MODULES = ("tensorflow", "keras", "flwr", "ray", "dp_accounting", "pexpect")
DEVICE_ABSENT = ("tensorflow", "keras", "flwr", "ray", "dp_accounting")


def _imports_the_converter_side(path: Path) -> bool:
    """A test module that imports edgekit.converters at its top is the converter side's own test."""
    return any(line.startswith(("from edgekit.converters", "import edgekit.converters"))
               for line in path.read_text(encoding="utf-8").splitlines())


# A device-only install run from a checkout cannot import the converter side (the checkout's
# edgekit/ shadows the installed package, and converters/ is a separate folder there).
if importlib.util.find_spec("edgekit.converters") is None:
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if _imports_the_converter_side(p)]


def pytest_configure(config: pytest.Config) -> None:
    profile = os.environ.get("EDGEKIT_TEST_PROFILE", "")
    if profile not in ("", "full", "device"):
        raise pytest.UsageError(f"EDGEKIT_TEST_PROFILE={profile!r}: use 'full', 'device' or leave it unset")
    found = {name for name in FULL_MODULES if importlib.util.find_spec(name) is not None}
    if profile == "full" and set(FULL_MODULES) - found:
        raise pytest.UsageError(f"the full test run needs {', '.join(sorted(set(FULL_MODULES) - found))}: "
                                "install with scripts/test.sh (pip install -c constraints.txt -e '.[convert,flower,dev]')")
    if profile == "device" and found & set(DEVICE_ABSENT):
        raise pytest.UsageError(f"the device-only run must not have {', '.join(sorted(found & set(DEVICE_ABSENT)))} "
                                "installed: it checks that the device package works without them")


# --- the committed tiny trained model (no TensorFlow needed) ------------------------------------

@pytest.fixture(scope="session")
def trained_files(tmp_path_factory) -> dict[str, Path]:
    """The tiny trained model, one file per quantization mode ("none", "int8", "dynamic").

    Copies of the committed files, so that no test can change the originals.
    """
    folder = tmp_path_factory.mktemp("tiny-trained")
    out = {}
    for mode in MODES:
        source = model_path(mode)
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing: rebuild it with "
                                    "`python -m tests.fixtures.make_tiny_model` (needs TensorFlow)")
        out[mode] = Path(shutil.copy(source, folder))
    return out


@pytest.fixture(scope="session")
def fl_model(trained_files) -> Path:
    """The tiny trained model with dynamic-range quantization: the global model of the Flower tests."""
    return trained_files["dynamic"]


# --- an untrained Keras model built on the spot (TensorFlow) -------------------------------------

@pytest.fixture(scope="session")
def tiny_vocab():
    from edgekit.tokenizer import SPECIAL_TOKENS
    from edgekit.vocab import Vocabulary, personal_slot_name

    words = [f"w{i}" for i in range(N_WORDS)]
    return Vocabulary(list(SPECIAL_TOKENS) + words + [personal_slot_name(i) for i in range(PERSONAL_SLOTS)],
                      PERSONAL_SLOTS)


def make_tiny_model(vocab, seed: int = 0, random_head: bool = True):
    """The real architecture at toy size; a random head with a non-zero bias unless told otherwise."""
    import keras

    from edgekit.converters.keras_model import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(len(vocab), **TINY)
    if random_head:
        head = model.get_layer("head")
        rng = np.random.default_rng(seed)
        head.set_weights([rng.normal(0, 0.5, head.kernel.shape).astype("f4"),
                          rng.normal(0, 0.5, head.bias.shape).astype("f4")])
    return model


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_vocab):
    """Fresh tiny models (same seed -> same weights), for tests that change them."""
    return functools.partial(make_tiny_model, tiny_vocab)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory):
    return tiny_model_factory()


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory, tiny_vocab):
    """Sentences of vocabulary words (plus a few unknown ones), one per line."""
    rng = np.random.default_rng(1)
    words = [t for t in tiny_vocab.tokens[5:tiny_vocab.first_slot]] + ["zzunknown"]
    lines = [" ".join(rng.choice(words, rng.integers(3, 10))) + "." for _ in range(60)]
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_keras_dir(tmp_path_factory, tiny_model, tiny_vocab):
    """A model folder as a user would have it: ``model.keras`` + ``vocab.txt``."""
    folder = tmp_path_factory.mktemp("keras")
    tiny_model.save(folder / "model.keras")
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab.tokens) + "\n", encoding="utf-8")
    return folder
