#!/usr/bin/env bash
# Run the project's checks: install/refresh .venv, lint (ruff), type-check (mypy), generated-code check, tests.
# Extra arguments go to pytest (e.g. launch/test.sh -k wire -x).
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "Usage: launch/test.sh [pytest args...]   (runs setup, ruff, mypy, protos --check, pytest)"
  exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/setup.sh
py="$root/.venv/bin/python"
packages=(protos robodata policy_norm policy_server robot_client replay calibration training)
echo "== ruff"; "$py" -m ruff check --no-cache "${packages[@]}" tests bench
echo "== mypy"; "$py" -m mypy "${packages[@]}"
echo "== protos"; "$py" -m protos.generate --check
echo "== pytest"; MUJOCO_GL="${MUJOCO_GL:-egl}" "$py" -m pytest "$@"
