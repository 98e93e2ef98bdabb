#!/usr/bin/env bash
# Serve a policy over gRPC on the GPU box (see usage). Runs launch/setup.sh first unless SKIP_SETUP=1.
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: launch/serve.sh --checkpoint DIR [options] [-- extra `python -m policy_server serve` arguments]
       launch/serve.sh --dataset DIR [options]          (dataset policy: replays the dataset, no model)

Options (defaults in brackets):
  --checkpoint DIR     Pi0.5 checkpoint (openpi or LeRobot layout, with policy_config.json)
  --dataset DIR        with --checkpoint: checked against the checkpoint's norm stats before serving;
                       alone: serve the dataset policy
  --host IP            address to bind [127.0.0.1]; 0.0.0.0 exposes the server: use --token-file and TLS then
  --port N             gRPC port [50051]
  --device D           auto | cpu | cuda | cuda:N [auto]
  --dtype T            auto | float32 | bfloat16 [auto: bfloat16 on CUDA, float32 on CPU]
  --tls-cert F --tls-key F   serve TLS
  --token-file F       require this bearer token from clients
  --log-dir DIR        also write the log to DIR/serve-<time>.log [runs/logs]
Environment: SKIP_SETUP=1 skips launch/setup.sh (e.g. on a GPU box with its own CUDA torch; see
TORCH_INDEX_URL in launch/setup.sh --help to have setup install a CUDA build).
The server checks the checkpoint strictly, validates its norm stats and the device memory before it listens.
TXT
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkpoint="" dataset="" host="127.0.0.1" port="50051" device="auto" dtype="auto"
tls_cert="" tls_key="" token_file="" log_dir="$root/runs/logs"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    --tls-cert) tls_cert="$2"; shift 2 ;;
    --tls-key) tls_key="$2"; shift 2 ;;
    --token-file) token_file="$2"; shift 2 ;;
    --log-dir) log_dir="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "serve.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "serve.sh: $*" >&2; exit 2; }
if [ -z "$checkpoint" ] && [ -z "$dataset" ]; then
  fail "give --checkpoint DIR (a Pi0.5 checkpoint) or --dataset DIR (the dataset policy); see --help"
fi
if [ -n "$checkpoint" ]; then
  [ -d "$checkpoint" ] || fail "checkpoint directory '$checkpoint' does not exist"
  [ -f "$checkpoint/model.safetensors" ] || fail "'$checkpoint' has no model.safetensors: not a checkpoint directory"
fi
if [ -n "$dataset" ] && [ ! -e "$dataset" ]; then fail "dataset '$dataset' does not exist"; fi
if { [ -n "$tls_cert" ] && [ -z "$tls_key" ]; } || { [ -z "$tls_cert" ] && [ -n "$tls_key" ]; }; then
  fail "TLS needs both --tls-cert and --tls-key"
fi
if [ -n "$token_file" ] && [ ! -r "$token_file" ]; then fail "token file '$token_file' is not readable"; fi
case "$host" in
  127.*|localhost|::1) ;;
  *) missing=()
     if [ -z "$token_file" ]; then missing+=("a token (--token-file)"); fi
     if [ -z "$tls_cert" ]; then missing+=("TLS (--tls-cert/--tls-key)"); fi
     if [ ${#missing[@]} -gt 0 ]; then
       echo "serve.sh: WARNING: binding $host exposes the server to the network without ${missing[*]}:" \
            "anyone who reaches port $port can query it" >&2
     fi ;;
esac

cd "$root"
if [ "${SKIP_SETUP:-0}" != 1 ]; then ./launch/setup.sh; fi
args=(serve --host "$host" --port "$port")
if [ -n "$checkpoint" ]; then
  args+=(--checkpoint "$checkpoint" --device "$device" --dtype "$dtype")
else
  args+=(--policy dataset)
fi
if [ -n "$dataset" ]; then args+=(--dataset "$dataset"); fi
if [ -n "$tls_cert" ]; then args+=(--tls-cert "$tls_cert" --tls-key "$tls_key"); fi
if [ -n "$token_file" ]; then args+=(--token-file "$token_file"); fi
args+=("${extra[@]}")
mkdir -p "$log_dir"
log="$log_dir/serve-$(date +%Y%m%d-%H%M%S).log"
echo "serve.sh: logging to $log"
set +e
"$root/.venv/bin/python" -m policy_server "${args[@]}" 2>&1 | tee "$log"
code="${PIPESTATUS[0]}"
set -e
if [ "$code" != 0 ] && [ "$code" != 130 ]; then
  echo "serve.sh: the server exited with code $code; the reason is in the last lines above (and in $log)" >&2
fi
exit "$code"
