"""Check the import contracts of pyproject.toml ([tool.importlinter]) on the installed layout.

In the repository the converter code is the top-level ``converters/`` folder, which
setuptools installs as ``edgekit.converters`` (package-dir). lint-imports reads a
package from its folder, so run in the checkout it would not see the converter side
at all. This script copies each package listed in ``[tool.setuptools]`` to where the
wheel puts it, then runs lint-imports on that copy.

    python scripts/lint_imports.py                 # exit status of lint-imports
    python scripts/lint_imports.py --stage DIR     # only write the layout into DIR
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def stage(dest: Path, root: Path = ROOT) -> Path:
    """Copy the Python files of every package in ``[tool.setuptools]`` to its installed place under ``dest``."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = config.get("package-dir", {})
    for package in config["packages"]:
        source = root / folders.get(package, package.replace(".", "/"))
        target = dest / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, target / module.name)
    return dest


def lint(staged: Path, pyproject: Path = PYPROJECT) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on a staged layout, importing only from it (not the checkout or an install)."""
    command = Path(sys.executable).with_name("lint-imports")
    if not command.is_file():
        raise SystemExit(f"{command}: not found; install import-linter (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(staged)}
    return subprocess.run([str(command), str(pyproject), "--no-cache", "--no-logo"], cwd=staged, env=env,
                          check=False, capture_output=True, text=True)  # the caller reads the status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=Path, help="write the installed layout into this folder and stop")
    args = parser.parse_args(argv)
    if args.stage:
        stage(args.stage)
        return 0
    with tempfile.TemporaryDirectory(prefix="edgekit-lint-imports-") as scratch:
        result = lint(stage(Path(scratch)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
