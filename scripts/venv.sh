# Sourced by the set-up scripts.
#   . scripts/venv.sh EXTRAS      ./.venv with edgekit (editable) and EXTRAS, e.g. "convert"
#   . scripts/venv.sh             only defines make_venv
# make_venv DIR PIP-ARGS...: the venv DIR holding what PIP-ARGS name, at the versions pinned in
# constraints.txt (a new release of a dependency cannot change a run overnight;
# `bash scripts/constraints.sh` refreshes the pins). pip runs only when DIR/.edgekit-stamp (a hash
# of pyproject.toml, constraints.txt and PIP-ARGS) differs, so a run with nothing changed starts at once.
PYTHON=${PYTHON:-python3}

make_venv() {
  local dir=$1 want
  shift
  want=$( { cat pyproject.toml constraints.txt; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.edgekit-stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  rm -f "$dir/.edgekit-stamp"
  "$dir/bin/python" -m pip install --quiet -c constraints.txt "$@"
  echo "$want" > "$dir/.edgekit-stamp"
}

if [ -n "${1:-}" ]; then make_venv .venv -e ".[$1]"; fi
