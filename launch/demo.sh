#!/usr/bin/env bash
# End-to-end demo on the embedded default: serves the embedded Pi0.5 policy (data/demo_policy) on loopback, runs
# it on the simulated arms for several episodes (async chunking, jerk-limited servo, recorded, rerun .rrd), runs
# the oracle and the doctor on the recording and writes demo_out/report.md. Exit 0 only if every threshold holds.
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
