#!/usr/bin/env bash
# Replay a dataset episode on the arms: always in MuJoCo first, then (with --real) on the real arms after a
# dry-run preview and a typed confirmation. Runs launch/setup.sh first unless SKIP_SETUP=1.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: launch/replay.sh --dataset PATH [--episode N] [--speed X] [--config NAME] [--real] [--out DIR]

  1. replays the episode's actions on the simulated arms (`python -m replay sim`): guard, ramp, servo, limits,
     tracking report; stops here if the sim replay fails (exit 1) or is refused (exit 2);
  2. with --real: prints the dry-run preview for the real arms (`python -m replay real --dry-run`), asks you to
     type `move` to continue, then replays on the real arms.
Defaults: --episode 0, --speed 1.0, --config bimanual_yam, --out runs/replay-<time>.
TXT
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dataset="" episode="0" speed="1.0" config="bimanual_yam" real=0 out="$root/runs/replay-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --episode) episode="$2"; shift 2 ;;
    --speed) speed="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --real) real=1; shift ;;
    *) echo "replay.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$dataset" ] || { echo "replay.sh: give --dataset PATH; see --help" >&2; exit 2; }
[ -e "$dataset" ] || { echo "replay.sh: dataset '$dataset' does not exist" >&2; exit 2; }

cd "$root"
if [ "${SKIP_SETUP:-0}" != 1 ]; then ./launch/setup.sh; fi
py="$root/.venv/bin/python"
common=(--dataset "$dataset" --episode "$episode" --speed "$speed" --robot-config "$config")
echo "== sim replay"
set +e
MUJOCO_GL="${MUJOCO_GL:-egl}" "$py" -m replay sim "${common[@]}" --out "$out/sim"
code=$?
set -e
if [ "$code" != 0 ]; then
  echo "replay.sh: the sim replay did not pass (exit $code); fix that before the real arms (report: $out/sim)" >&2
  exit "$code"
fi
[ "$real" = 1 ] || { echo "replay.sh: sim replay passed; add --real to replay on the real arms"; exit 0; }
echo "== real arms: dry-run preview (nothing is sent)"
"$py" -m replay real "${common[@]}" --dry-run --out "$out/preview"
printf 'Type "move" to replay episode %s on the real arms (anything else aborts): ' "$episode"
read -r answer
[ "$answer" = move ] || { echo "replay.sh: aborted; nothing moved"; exit 2; }
exec "$py" -m replay real "${common[@]}" --out "$out/real" --i-understand-this-moves-the-arm
