#!/usr/bin/env bash
# Install edgekit with every extra into ./.venv (versions from constraints.txt) and run the
# whole test suite in one pytest process. Extra arguments go to pytest:
#   bash scripts/test.sh tests/test_tokenizer.py     bash scripts/test.sh -k personaliz
# pytest's own exit status is the result: a failing test, a collection error, or a selection
# that matches no test (exit 5) fails the run. Each test has a time limit (pytest-timeout,
# pyproject.toml); nothing is retried.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh "convert,flower,dev"
# The tflite-runtime 2.14 fallback needs its own venv (numpy<2, Python <= 3.11); its test
# skips when python3.11 is missing. Pinned here: it is apart from constraints.txt.
if ! .venv-compat/bin/python -c "import tflite_runtime, platformdirs, cryptography, flatbuffers" 2>/dev/null \
    && command -v python3.11 >/dev/null; then
  { [ -x .venv-compat/bin/python ] || python3.11 -m venv .venv-compat; } && .venv-compat/bin/python -m pip install \
    --quiet "tflite-runtime==2.14.0" "numpy==1.26.4" "threadpoolctl==3.6.0" "platformdirs==4.14.9" \
    "cryptography==50.0.2" "flatbuffers==25.12.19" \
    || echo "note: no tflite-runtime venv; its test will skip"
fi
export EDGEKIT_TEST_PROFILE=full  # tests/conftest.py: fail at once if an extra is missing (no skips)
exec .venv/bin/python -m pytest "$@"
