#!/usr/bin/env bash
# Build a LeRobot 0.3.3 environment (dataset codebase v2.1) for make_datasets.py's v2.1 datasets, on top of the
# 0.6.1 oracle environment from setup_oracle_env.sh (never a dependency of the project).
# Usage: tests/golden/lerobot/setup_v21_env.sh V21_VENV ORACLE_VENV
# 0.3.3 pins torch < 2.8, datasets <= 3.6 and draccus 0.10; only the last two matter to its dataset writer, so
# they and lerobot 0.3.3 go into V21_VENV and everything else (torch, PyAV with SVT-AV1, pandas, pyarrow) is
# taken from ORACLE_VENV through a .pth file placed after V21_VENV's own packages.
set -euo pipefail
venv="${1:?usage: setup_v21_env.sh V21_VENV ORACLE_VENV}"
oracle="${2:?usage: setup_v21_env.sh V21_VENV ORACLE_VENV}"
python3.11 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --no-deps lerobot==0.3.3
"${pip[@]}" install "datasets==3.6.0" "draccus==0.10.0"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
oracle_site="$("$oracle/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$oracle_site" > "$site/zz_oracle_deps.pth"
"$venv/bin/python" -c "from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION; assert CODEBASE_VERSION == 'v2.1'; \
print('lerobot v2.1 writer ok')"
