"""A command whose optional extra is missing says what to install, in one line, without a traceback.

The extras stay installed: each run is a fresh interpreter whose import system
refuses the extra's modules, exactly as Python does when they are absent.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# argv[1]: comma-separated modules to hide (with their submodules); argv[2:]: the edgekit command line.
WITHOUT_MODULES = """
import sys

class Hide:
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, name, path=None, target=None):
        if any(name == hidden or name.startswith(hidden + ".") for hidden in self.names):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide(sys.argv[1].split(",")))
from edgekit.cli import main
main(sys.argv[2:], prog_name="edgekit")
"""
TENSORFLOW = "tensorflow,keras"


def run_without(modules: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_MODULES, modules, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def keras_args(tmp_path: Path) -> list[str]:
    """``evaluate -m MODEL.keras --text FILE`` with files that exist, so only the import can fail."""
    (tmp_path / "m.keras").write_bytes(b"not read")
    (tmp_path / "t.txt").write_text("hello there\n", encoding="utf-8")
    return ["evaluate", "-m", str(tmp_path / "m.keras"), "--text", str(tmp_path / "t.txt")]


@pytest.mark.parametrize("modules, args, missing, extra", [
    ("flwr", ["simulate"], "flwr", "flower"),
    pytest.param(TENSORFLOW, ["convert"], "keras", "convert", marks=pytest.mark.convert),
    pytest.param(TENSORFLOW, ["train-base"], "keras", "convert", marks=pytest.mark.convert),
    pytest.param(TENSORFLOW, "keras_args", "keras", "convert", marks=pytest.mark.convert),
])
def test_missing_extra_names_the_install_command(modules, args, missing, extra, request):
    args = request.getfixturevalue(args) if isinstance(args, str) else args
    done = run_without(modules, *args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"`edgekit {args[0]}` needs {missing}, which is not installed" in lines[0]
    assert f"pip install 'edgekit[{extra}]'" in lines[0]
    assert f"pip install -e '.[{extra}]'" in lines[0]


def test_other_missing_modules_keep_their_traceback():
    """Only known extras are explained; a missing module of edgekit itself is a bug to show."""
    done = run_without("edgekit.flower.partitions", "simulate")  # imported inside the command
    assert done.returncode != 0
    assert "Traceback" in done.stderr


@pytest.mark.convert  # the converter side's command, with TensorFlow hidden
@pytest.mark.parametrize("missing, message", [("model", "no such Keras model file"), ("vocab", "no such vocabulary file"),
                                              ("calibration", "no such calibration text file")])
def test_convert_checks_its_inputs_before_loading_tensorflow(tmp_path, missing, message):
    """With TensorFlow hidden, a wrong path still gets its own message: nothing waited for the import."""
    (tmp_path / "m.keras").write_bytes(b"not read")
    (tmp_path / "vocab.txt").write_text("<pad>\n", encoding="utf-8")
    paths = {"model": tmp_path / "m.keras", "vocab": tmp_path / "vocab.txt", "calibration": tmp_path / "cal.txt"}
    (tmp_path / "cal.txt").write_text("some words to calibrate on\n", encoding="utf-8")
    paths[missing] = tmp_path / "missing"
    done = run_without(TENSORFLOW, "convert", "-m", str(paths["model"]), "--vocab", str(paths["vocab"]),
                       "--quantize", "int8", "--calibration-text", str(paths["calibration"]), "-o", str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path / 'missing'}: {message}" in done.stderr
    assert "needs keras" not in done.stderr and "Traceback" not in done.stderr
