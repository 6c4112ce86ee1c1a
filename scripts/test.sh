#!/usr/bin/env bash
# Install edgekit with every extra into ./.venv and run the test suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh "convert,flower,dev"
# The tflite-runtime 2.14 fallback needs its own venv (numpy<2, Python <= 3.11);
# its test skips when this cannot be built.
if [ ! -x .venv-compat/bin/python ] && command -v python3.11 >/dev/null; then
  python3.11 -m venv .venv-compat && .venv-compat/bin/python -m pip install --quiet \
    "tflite-runtime==2.14.*" "numpy<2" threadpoolctl || echo "note: no tflite-runtime venv; its test will skip"
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
# pytest exits 5 when it collected no tests: that is not a failure of the code.
[ "$code" -eq 5 ] && { echo "no tests collected"; exit 0; }
exit "$code"
