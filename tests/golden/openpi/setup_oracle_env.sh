#!/usr/bin/env bash
# Creates the virtual environment in which openpi's own JAX code writes the golden Pi0.5 fixture
# (tests/golden/openpi/make_golden.py). openpi is a test oracle here, never a project dependency.
#
# Usage: setup_oracle_env.sh [VENV_DIR] [OPENPI_SRC]
#   VENV_DIR    where to create the venv (default /tmp/openpi-venv)
#   OPENPI_SRC  an extracted openpi source tree at the commit below (also read from $OPENPI_SRC).
#               Get it with:
#                 git clone https://github.com/Physical-Intelligence/openpi && git -C openpi checkout 15a9616
#               or, from a bare mirror: mkdir src && git --git-dir=MIRROR archive 15a9616 | tar -x -C src
# Environment:
#   PYTHON      interpreter to build the venv with (default python3.11; openpi needs >= 3.11)
#   TORCH_SPEC  pip requirement for torch (default "torch"). openpi.models.model imports torch and its
#               PyTorch model at import time (type hints and load_pytorch only); any CPU build is enough,
#               e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" or a local CPU wheel.
set -euo pipefail

OPENPI_COMMIT=15a9616
VENV_DIR=${1:-/tmp/openpi-venv}
OPENPI_SRC=${2:-${OPENPI_SRC:-}}
PYTHON=${PYTHON:-python3.11}
TORCH_SPEC=${TORCH_SPEC:-torch}

if [[ -z "$OPENPI_SRC" || ! -f "$OPENPI_SRC/src/openpi/models/pi0.py" ]]; then
    echo "OPENPI_SRC must point at an extracted openpi source tree (commit $OPENPI_COMMIT); got '${OPENPI_SRC}'" >&2
    exit 2
fi

"$PYTHON" -m venv "$VENV_DIR"
PIP=("$VENV_DIR/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --upgrade pip wheel

# openpi's JAX stack as its pyproject pins it (CPU jax instead of jax[cuda12]; the ml-dtypes and
# tensorstore overrides come from its [tool.uv] section), plus what the modules we import need:
# models.{model,pi0,pi0_config,gemma,siglip,lora,tokenizer}, shared.{normalize,array_typing,image_tools,download}.
"${PIP[@]}" \
    "jax[cpu]==0.5.3" "jaxlib==0.5.3" "flax==0.10.2" "orbax-checkpoint==0.11.13" \
    "ml-dtypes==0.4.1" "tensorstore==0.1.74" "numpy>=1.22.4,<2.0.0" \
    "jaxtyping==0.2.36" "beartype==0.19.0" "chex==0.1.90" "augmax>=0.3.4" "einops>=0.8.0" \
    "ml_collections==1.0.0" "numpydantic>=1.6.6" "pydantic" "etils[epath]" "safetensors" \
    "typing-extensions>=4.12.2" "sentencepiece>=0.2.0" "filelock>=3.16.1" "fsspec>=2024.6.0" \
    "tqdm-loggable>=0.2" "dm-tree>=0.1.8" "pillow>=11.0.0" "msgpack>=1.0.5" "websockets>=11.0" \
    "transformers==4.53.2"
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options on purpose
"${PIP[@]}" $TORCH_SPEC

"${PIP[@]}" --no-deps -e "$OPENPI_SRC" -e "$OPENPI_SRC/packages/openpi-client"

"$VENV_DIR/bin/python" - <<'PY'
import jax, flax, orbax.checkpoint, numpy
import openpi.models.pi0, openpi.models.model, openpi.models.tokenizer, openpi.shared.normalize
print("openpi oracle venv ok: jax", jax.__version__, "flax", flax.__version__,
      "orbax-checkpoint", orbax.checkpoint.__version__, "numpy", numpy.__version__)
PY
