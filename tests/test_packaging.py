"""What ``pip install .`` puts into site-packages: one top-level package, ``edgekit``, and all of it.

The converter code is the repository's ``converters/`` folder, installed as
``edgekit.converters``; installed that way it has no ``models/`` or ``data/``
beside it and must say so instead of looking inside site-packages.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a build reads: pyproject.toml, the readme it names, and the package folders.
SOURCES = ("pyproject.toml", "README.md", "edgekit", "converters")


def source_modules() -> set[str]:
    """Installed path of every module in the checkout (converters/ goes to edgekit/converters/)."""
    paths = {f"edgekit/{p.relative_to(ROOT / 'edgekit').as_posix()}" for p in (ROOT / "edgekit").rglob("*.py")}
    paths |= {f"edgekit/converters/{p.name}" for p in (ROOT / "converters").glob("*.py")}
    return {p for p in paths if "__pycache__" not in p}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh venv with ``pip install --no-deps`` of a copy of the sources (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    env = tmp / "venv"
    venv.create(env, with_pip=True)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    before = {p.name for p in site.iterdir()}
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(source)], check=True)
    return {"python": python, "site": site, "new": {p.name for p in site.iterdir()} - before, "tmp": tmp}


@pytest.mark.slow
def test_one_top_level_package(installed):
    dist_info = [name for name in installed["new"] if name.endswith(".dist-info")]
    assert installed["new"] == {"edgekit", *dist_info} and len(dist_info) == 1, installed["new"]
    info = installed["site"] / dist_info[0]
    assert (info / "top_level.txt").read_text(encoding="utf-8").split() == ["edgekit"]
    record = {line.split(",")[0] for line in (info / "RECORD").read_text(encoding="utf-8").splitlines()}
    inside = {path.split("/")[0] for path in record if not path.startswith("..")}  # ../ = the bin/ script
    assert inside == {"edgekit", dist_info[0]}, inside


@pytest.mark.slow
def test_every_module_and_data_file_is_in_the_wheel(installed):
    """The package list in pyproject.toml is explicit: a new subpackage must be added there."""
    record_file = next(installed["site"].glob("edgekit-*.dist-info")) / "RECORD"
    record = {line.split(",")[0] for line in record_file.read_text(encoding="utf-8").splitlines()}
    missing = source_modules() - record
    assert not missing, f"not installed (add the package to [tool.setuptools] packages): {sorted(missing)}"
    assert "edgekit/py.typed" in record
    assert {f"edgekit/assets/{p.name}" for p in (ROOT / "edgekit" / "assets").glob("*.tflite")} <= record


@pytest.mark.slow
def test_installed_version_and_converter_defaults(installed):
    """One version source; outside a checkout the converter defaults are absent, and using one says why."""
    code = textwrap.dedent("""
        import json, importlib.metadata
        import edgekit, edgekit.converters as c
        try:
            c.require_checkout(c.checkout_folder("models"), "MODEL")
            error = None
        except c.CheckoutFolderMissing as e:
            error = str(e)
        print(json.dumps({"version": edgekit.__version__, "metadata": importlib.metadata.version("edgekit"),
                          "file": c.__file__, "checkout": str(c.SOURCE_CHECKOUT), "error": error}))
    """)
    result = json.loads(subprocess.run([str(installed["python"]), "-c", code], cwd=installed["tmp"], check=True,
                                       capture_output=True, text=True).stdout)
    assert result["version"] == result["metadata"]
    assert Path(result["file"]) == installed["site"] / "edgekit" / "converters" / "__init__.py"
    assert result["checkout"] == "None"
    assert result["error"].startswith("edgekit.converters is installed without a source checkout (")
    assert result["error"].endswith("run from one installed with pip install -e '.[convert]', or pass MODEL")


def test_converters_resolve_to_this_checkout():
    """In a checkout, edgekit.converters is this checkout's converters/ (an editable install maps it).

    With pytest's pythonpath, ``edgekit`` comes from the checkout while ``edgekit.converters``
    comes from the venv's editable finder: a venv installed from another checkout would mix the two.
    """
    spec = importlib.util.find_spec("edgekit.converters")
    if spec is None:
        pytest.skip("edgekit.converters is not importable: no editable install of this checkout (pip install -e .)")
    assert spec.origin is not None
    assert Path(spec.origin) == ROOT / "converters" / "__init__.py", (
        f"edgekit.converters comes from {spec.origin}: this venv's editable install is another checkout's; "
        f"run pip install -e . in {ROOT}")
