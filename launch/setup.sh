#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# Why a script and not a bare `pip install -e .`:
#  * torch must be installed first and explicitly, so that no resolver ever pulls a multi-GB CUDA build
#    onto a CPU-only machine (CPU wheel by default; set TORCH_INDEX_URL on a GPU box for a CUDA build).
#  * openpi-client 0.1.2 pins numpy<2, which conflicts with zarr 3 / rerun 0.41 / opencv 5. It is installed
#    with --no-deps; its real runtime dependencies are declared in pyproject.toml.
# Idempotent: a stamp holding the hash of pyproject.toml and this script skips work when nothing changed.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: launch/setup.sh [--force]

Creates .venv with Python 3.11 and installs the project with its dev extras.
Environment:
  PYTHON            interpreter to build the venv from (default: python3.11, then python3)
  VENV              venv directory (default: .venv in the repository root)
  TORCH_VERSION     torch version to install (default: 2.13.0)
  TORCH_INDEX_URL   package index for torch (default: the PyTorch CPU index, unless a local wheel
                    directory in PIP_FIND_LINKS already holds torch)
TXT
}

force=0
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VENV:-$root/.venv}"
torch_version="${TORCH_VERSION:-2.13.0}"

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$cand"; return
    fi
  done
  echo "setup.sh: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
}

stamp="$venv/.setup-stamp"
want="$(cat pyproject.toml launch/setup.sh | sha256sum | cut -c1-16)"
if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

py="$(pick_python)"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating $venv with $py"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  # A torch wheel already on disk (PIP_FIND_LINKS directories) is installed as that exact file, so no
  # resolver can swap in a multi-GB CUDA build from the index; its own dependencies come from the index.
  local_wheel=""
  IFS=' ' read -r -a link_dirs <<<"${PIP_FIND_LINKS:-}"
  for d in "${link_dirs[@]:-}"; do
    d="${d#file://}"
    for w in "$d"/torch-"$torch_version"*-cp311-*.whl; do
      if [ -f "$w" ]; then local_wheel="$w"; fi
    done
  done
  if [ -n "$local_wheel" ] && [ -z "${TORCH_INDEX_URL:-}" ]; then
    echo "setup.sh: installing torch from $local_wheel"
    "${pip[@]}" install -q "$local_wheel"
  else
    index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
    echo "setup.sh: installing torch $torch_version from $index"
    "${pip[@]}" install -q --index-url "$index" --extra-index-url https://pypi.org/simple "torch==$torch_version"
  fi
fi

echo "setup.sh: installing the project and its dev tools"
"${pip[@]}" install -q -e ".[dev]"
"${pip[@]}" install -q --no-deps "openpi-client==0.1.2"
"$venv/bin/python" - <<'PY'
import numpy, torch, openpi_client  # noqa: F401  (import check of the pieces most likely to clash)
assert int(numpy.__version__.split(".")[0]) >= 2, f"numpy {numpy.__version__} < 2: something downgraded it"
print(f"setup.sh: ok (numpy {numpy.__version__}, torch {torch.__version__})")
PY
echo "$want" >"$stamp"
