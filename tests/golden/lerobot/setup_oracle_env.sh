#!/usr/bin/env bash
# Build the LeRobot 0.6.1 oracle environment used by make_golden.py (never a dependency of the project).
# Usage: tests/golden/lerobot/setup_oracle_env.sh VENV_DIR
# LeRobot 0.6.1's wheel says Python >= 3.12; on 3.11 it installs with --ignore-requires-python once its eight
# PEP-695 lines are back-ported (backport_pep695.py). Only the modules the golden script imports are needed:
# policies/common/vla_utils.py (resize_with_pad_torch) and policies/pi05/processor_pi05.py (the state prompt).
# make_datasets.py also needs LeRobot's [dataset] extra (installed below).
set -euo pipefail
venv="${1:?usage: setup_oracle_env.sh VENV_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3.11 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install torch==2.14.1 torchvision==0.29.1 numpy pillow
wheels="$(mktemp -d)"
"${pip[@]}" download --no-deps --python-version 3.12 --only-binary=:all: -d "$wheels" lerobot==0.6.1
"${pip[@]}" install --no-deps --ignore-requires-python "$wheels"/lerobot-0.6.1-*.whl
"${pip[@]}" install huggingface_hub draccus safetensors einops gymnasium opencv-python-headless
# The [dataset] extra, for make_datasets.py (LeRobotDataset.create / add_frame / save_episode / finalize, AV1 via PyAV).
"${pip[@]}" install "datasets>=4.8,<5" "pandas>=2,<3" "pyarrow>=21,<30" "av>=15,<16" "jsonlines>=4,<5"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$venv/bin/python" "$here/backport_pep695.py" "$site/lerobot"
"$venv/bin/python" -c "from lerobot.policies.common.vla_utils import resize_with_pad_torch; \
from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep; print('lerobot oracle ok')"
