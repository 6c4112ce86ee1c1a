#!/usr/bin/env bash
# Refresh constraints.txt, the pinned versions every set-up script installs: resolve the newest
# versions pyproject.toml allows, with every extra, in a scratch venv, and write them down.
# Run it on purpose (then run bash scripts/test.sh and commit constraints.txt), never in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet -e ".[convert,flower,dev]"
{
  echo "# Pinned versions for scripts/venv.sh (pip install -c constraints.txt ...)."
  echo "# Made by: bash scripts/constraints.sh ($("$scratch/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.system(), platform.machine())'))"
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable
} > constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
