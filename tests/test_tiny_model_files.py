"""The committed tiny model files are exactly what their script builds: they cannot drift from it."""
from __future__ import annotations

import pytest

from tests.fixtures.make_tiny_model import MODES, build, model_path

pytestmark = [pytest.mark.convert, pytest.mark.slow]


def test_the_script_rebuilds_the_committed_files_byte_for_byte(tmp_path):
    built = build(tmp_path)
    for mode in MODES:
        assert built[mode].read_bytes() == model_path(mode).read_bytes(), (
            f"{model_path(mode)} is not what tests/fixtures/make_tiny_model.py builds with these versions: "
            "rebuild the files with `python -m tests.fixtures.make_tiny_model` and commit them")
