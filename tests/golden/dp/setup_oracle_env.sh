#!/usr/bin/env bash
# Build the Diffusion-Policy oracle environment used by make_golden.py (never a dependency of the project).
# Usage: tests/golden/dp/setup_oracle_env.sh VENV_DIR DP_SRC_DIR [DP_GIT_DIR]
# DP's ReplayBuffer is written for zarr 2; these are the versions its real-robot pipeline runs with. Only two of
# its files are needed (diffusion_policy/common/replay_buffer.py and diffusion_policy/codecs/
# imagecodecs_numcodecs.py); they are copied out of a diffusion_policy checkout (or a bare git dir, DP_GIT_DIR)
# into DP_SRC_DIR, which make_golden.py puts on sys.path.
set -euo pipefail
venv="${1:?usage: setup_oracle_env.sh VENV_DIR DP_SRC_DIR [DP_GIT_DIR]}"
src="${2:?usage: setup_oracle_env.sh VENV_DIR DP_SRC_DIR [DP_GIT_DIR]}"
git_dir="${3:-}"
python3.11 -m venv "$venv"
"$venv/bin/python" -m pip --disable-pip-version-check -q install "zarr==2.18.*" "numcodecs==0.15.*" "numpy==1.26.*" imagecodecs
files=(diffusion_policy/common/replay_buffer.py diffusion_policy/codecs/imagecodecs_numcodecs.py)
if [ -z "$git_dir" ]; then
  git_dir="$(mktemp -d)/diffusion_policy"
  git clone -q --depth 1 https://github.com/real-stanford/diffusion_policy "$git_dir"
fi
for f in "${files[@]}"; do
  mkdir -p "$src/$(dirname "$f")"
  git -C "$git_dir" show "HEAD:$f" >"$src/$f"
done
git -C "$git_dir" rev-parse HEAD >"$src/DP_COMMIT"
touch "$src/diffusion_policy/__init__.py" "$src/diffusion_policy/common/__init__.py" "$src/diffusion_policy/codecs/__init__.py"
"$venv/bin/python" -c "import sys; sys.path.insert(0, '$src'); \
from diffusion_policy.common.replay_buffer import ReplayBuffer; \
from diffusion_policy.codecs.imagecodecs_numcodecs import Jpeg2k; print('dp oracle ok')"
