"""The import contracts in pyproject.toml hold, and they break on a planted upward import or cycle.

lint-imports runs on the installed layout (``converters/`` staged as
``edgekit/converters``) that ``scripts/lint_imports.py`` writes.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter comes with the dev extra")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts" / "lint_imports.py")
assert _spec is not None and _spec.loader is not None
lint_imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lint_imports)

LAYERS = "Layers: each module imports only from the layers below it"
ACYCLIC = "No import cycles between the modules of any package"
TENSORFLOW = "Only the converter side imports TensorFlow"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> str:
    return lint_imports.lint(lint_imports.stage(tmp_path_factory.mktemp("baseline"))).stdout


def test_staging_puts_the_converters_inside_edgekit(tmp_path):
    staged = lint_imports.stage(tmp_path)
    assert sorted(p.name for p in staged.iterdir()) == ["edgekit"]
    assert (staged / "edgekit" / "converters" / "convert.py").is_file()
    assert (staged / "edgekit" / "federated" / "hazmat" / "update.py").is_file()


def test_the_contracts_hold(baseline):
    assert "0 broken" in baseline, baseline


def test_the_converter_side_is_the_only_tensorflow_importer(baseline):
    assert f"{TENSORFLOW} KEPT" in baseline, baseline


# (module that gets the import, the import, contract that must break, what its report names: one of)
PLANTED = {
    "upward import": ("tokenizer.py", "from edgekit import model", LAYERS,
                      ("edgekit.tokenizer is not allowed to import edgekit.model",)),
    "device code importing the converter side": ("runtime.py", "from edgekit.converters import corpus", LAYERS,
                                                 ("edgekit.runtime is not allowed to import edgekit.converters",)),
    "converter side importing the CLI": ("converters/corpus.py", "from edgekit.commands import common", LAYERS,
                                         ("edgekit.converters is not allowed to import edgekit.commands",)),
    # vocab imports tokenizer; both sit in one layer, so only the cycle contract can catch this
    "cycle inside one layer": ("tokenizer.py", "from edgekit import vocab", ACYCLIC,
                               ("- .tokenizer -> .vocab", "- .vocab -> .tokenizer")),
    "TensorFlow on the device side": ("metrics.py", "import tensorflow", TENSORFLOW,
                                      ("edgekit.metrics -> tensorflow",)),
}


@pytest.mark.parametrize("module, line, contract, reports", PLANTED.values(), ids=PLANTED.keys())
def test_a_planted_import_breaks_its_contract(tmp_path, baseline, module, line, contract, reports):
    assert not any(report in baseline for report in reports)  # the plant breaks it, not the tree
    staged = lint_imports.stage(tmp_path)
    target = staged / "edgekit" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    result = lint_imports.lint(staged)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert any(report in broken for report in reports), broken


def test_the_cli_imports_tensorflow_only_when_a_command_runs():
    """Every command module, ``edgekit --help`` included, loads without TensorFlow; the device
    commands load without the converter side at all."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import edgekit.cli, edgekit.commands
        for name in ("device", "federated", "evaluate"):
            importlib.import_module(f"edgekit.commands.{name}")
        assert "edgekit.converters" not in sys.modules
        for info in pkgutil.iter_modules(edgekit.commands.__path__):
            importlib.import_module(f"edgekit.commands.{info.name}")
        ctx = edgekit.cli.main.make_context("edgekit", ["--help"], resilient_parsing=True)
        edgekit.cli.main.format_help(ctx, edgekit.cli.click.HelpFormatter())
        loaded = [name for name in ("tensorflow", "keras") if name in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_new_module_must_be_given_a_layer(tmp_path, baseline):
    staged = lint_imports.stage(tmp_path)
    (staged / "edgekit" / "unplaced.py").write_text('"""A module nobody put in a layer."""\n', encoding="utf-8")
    result = lint_imports.lint(staged)
    assert "- edgekit.unplaced" not in baseline
    assert f"{LAYERS} BROKEN" in result.stdout
    assert "- edgekit.unplaced" in result.stdout.split("are not listed as layers", 1)[1], result.stdout
