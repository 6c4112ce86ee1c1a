#!/usr/bin/env bash
# Install edgekit with every extra into ./.venv and run the test suite.
# Usage: bash scripts/test.sh [pytest args: run just those, in one pytest]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh "convert,flower,dev"
# The tflite-runtime 2.14 fallback needs its own venv (numpy<2, Python <= 3.11);
# its test skips when this cannot be built.
if [ ! -x .venv-compat/bin/python ] && command -v python3.11 >/dev/null; then
  python3.11 -m venv .venv-compat && .venv-compat/bin/python -m pip install --quiet \
    "tflite-runtime==2.14.*" "numpy<2" threadpoolctl || echo "note: no tflite-runtime venv; its test will skip"
fi

# pytest exits 5 when it collected no tests: that is not a failure of the code.
run_pytest() { local code=0; .venv/bin/python -m pytest "$@" || code=$?; [ "$code" -eq 5 ] && code=0; return "$code"; }

# Flower's Ray-based simulation engine hangs now and then when one process
# runs several simulations in a row (its worker never connects). So each
# simulation test runs in a process of its own, under a time limit, with one
# retry; everything else runs first, in one pytest.
if [ "$#" -gt 0 ]; then run_pytest "$@"; exit; fi  # a chosen subset runs as asked
SIM_TESTS=tests/test_flower_sim.py
status=0
run_pytest --ignore="$SIM_TESTS" || status=$?
for test_id in $(.venv/bin/python -m pytest --collect-only -q "$SIM_TESTS" 2>/dev/null | grep "::"); do
  for attempt in 1 2; do
    sim=0
    timeout --kill-after=30 600 .venv/bin/python -m pytest "$test_id" || sim=$?
    [ "$sim" -ne 124 ] && [ "$sim" -ne 137 ] && break
    echo "$test_id timed out (attempt $attempt); retrying once"
  done
  [ "$sim" -ne 0 ] && [ "$sim" -ne 5 ] && status=$sim
done
exit "$status"
