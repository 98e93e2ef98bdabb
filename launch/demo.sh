#!/usr/bin/env bash
# End-to-end demo on the embedded default: serves the bundled sample dataset with the dataset policy on
# loopback and runs a robot client against it, printing what it receives. Exit 0 only if every chunk matched.
# Extra arguments go to `python -m robot_client demo` (see --help there).
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  "$root/launch/setup.sh" >/dev/null
  exec "$root/.venv/bin/python" -m robot_client demo --help
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./launch/setup.sh
exec "$root/.venv/bin/python" -m robot_client demo "$@"
