"""The README's Quickstart runs as written: its shell block, then its Python block.

They run in a fresh folder that holds only what a clone has (``data/``), with
the venv's ``edgekit`` on PATH in place of ``. .venv/bin/activate``, so a
renamed flag or a moved import in the README fails here, not in a user's hands.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Conversion, two personalizations and two rounds: minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.convert, pytest.mark.timeout(1200)]


def quickstart_blocks() -> tuple[str, str]:
    """The first ```bash and the first ```python block after the Quickstart heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quickstart"):]
    shell = re.search(r"```bash\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert shell and python, "the Quickstart lost its shell or Python block"
    return shell.group(1), python.group(1)


def test_the_quickstart_runs_as_written(tmp_path):
    shell, python = quickstart_blocks()
    assert shell.startswith(". .venv/bin/activate\n")
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    env.pop("EDGEKIT_STATE_DIR", None)
    script = "set -euo pipefail\n" + shell.replace(". .venv/bin/activate\n", "")
    # The conversion's quality report is not what this test is about: keep it short.
    script = script.replace("edgekit convert --quantize int8", "edgekit convert --eval-max 200 --quantize int8")
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (tmp_path / "my-model-v2.tflite").exists()
    env["EDGEKIT_STATE_DIR"] = str(tmp_path / "my-state")
    run = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Suggestion(word=" in run.stdout and (tmp_path / "outbox" / "u2.edgekit-update").exists()
