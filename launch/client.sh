#!/usr/bin/env bash
# Run a served policy on the arms from the deploy machine (see usage). Runs launch/setup.sh first unless SKIP_SETUP=1.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: launch/client.sh --server HOST:PORT [options] [-- extra `python -m robot_client run` arguments]

Options (defaults in brackets):
  --server HOST:PORT   the policy server (launch/serve.sh on the GPU box)
  --robot sim|yam|yam-process   MuJoCo arms, the real YAM arms, or those with the servo loop in its own process [sim]
  --config NAME|FILE   robot config (limits, buses, cameras) [bimanual_yam]
  --chunking MODE      sync | async | ensemble | rtc [async]
  --prompt TEXT        task instruction sent with every observation [""]
  --episodes N         [1]     --seconds S   episode length [20]
  --record DIR.zarr    record the run (state, actions, images, chunks) [runs/<time>.zarr]; --no-record to skip
  --token-file F       bearer token of the server    --tls-root-cert F   CA of a TLS server
  --dry-run            compute every command, send none (the real arm holds where it is)
  --i-understand-this-moves-the-arm   required with the real arms without --dry-run
Real arms: run once with --dry-run, check the printed first-action guard and chunks, then run without it.
E-stop while running: `e` + Enter, or `kill -USR1 <pid>`.
TXT
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
server="" robot="sim" config="bimanual_yam" chunking="async" prompt="" episodes="1" seconds="20"
record="$root/runs/$(date +%Y%m%d-%H%M%S).zarr" no_record=0
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --server) server="$2"; shift 2 ;;
    --robot) robot="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --chunking) chunking="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --episodes) episodes="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --record) record="$2"; shift 2 ;;
    --no-record) no_record=1; shift ;;
    --token-file|--tls-root-cert) pass+=("$1" "$2"); shift 2 ;;
    --dry-run|--i-understand-this-moves-the-arm) pass+=("$1"); shift ;;
    --) shift; pass+=("$@"); break ;;
    *) echo "client.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "client.sh: $*" >&2; exit 2; }
[ -n "$server" ] || fail "give --server HOST:PORT (where launch/serve.sh listens); see --help"
case "$server" in *:[0-9]*) ;; *) fail "--server must be HOST:PORT, got '$server'" ;; esac
case "$robot" in sim|yam|yam-process) ;; *) fail "--robot must be sim, yam or yam-process, got '$robot'" ;; esac

cd "$root"
if [ "${SKIP_SETUP:-0}" != 1 ]; then ./launch/setup.sh; fi
args=(run --server "$server" --robot "$robot" --config "$config" --chunking "$chunking" --prompt "$prompt"
      --episodes "$episodes" --seconds "$seconds")
if [ "$no_record" = 0 ]; then
  mkdir -p "$(dirname "$record")"
  args+=(--record "$record")
fi
args+=("${pass[@]}")
set +e
"$root/.venv/bin/python" -m robot_client "${args[@]}"
code=$?
set -e
case "$code" in
  0) if [ "$no_record" = 0 ]; then echo "client.sh: recording in $record (look at it: python -m replay view $record)"; fi ;;
  2) echo "client.sh: refused before anything moved; the reason is printed above" >&2 ;;
  *) echo "client.sh: the run ended with code $code (e-stop, fault or no episode completed); see above" >&2 ;;
esac
exit "$code"
