# Sourced by the scripts that drive the real binary against the AWS stand-ins (bench/common.sh,
# tests/packages/run.sh, scripts/demo.sh). Needs ROOT and VENV (the pinned test tools). Sets: work (a directory
# removed at exit, with every process in pids), the helpers say, free_port, wait_until,
# host_field, and start_moto, which starts moto with the two-account scenario and sets
# moto_port, host (the host's own session, as JSON) and host_env (that session as the
# environment an instance profile would give the daemon).
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*" >&2; }
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_until COMMAND...: polls every 20 ms, for 10 s at most.
wait_until() { for _ in $(seq 500); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.02; done; return 1; }
[ -x "$VENV/bin/moto_server" ] || { echo "$VENV is missing: run make venv first" >&2; exit 1; }

start_moto() {
  moto_port=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  pids+=($!)
  wait_until curl -sf "http://127.0.0.1:$moto_port/moto-api/" || { echo "moto did not start" >&2; exit 1; }
  host=$("$VENV/bin/python" "$ROOT/tests/support/bootstrap.py" "http://127.0.0.1:$moto_port")
  host_env=(AWS_ACCESS_KEY_ID="$(host_field AccessKeyId)" AWS_SECRET_ACCESS_KEY="$(host_field SecretAccessKey)"
    AWS_SESSION_TOKEN="$(host_field SessionToken)" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
    AWS_EC2_METADATA_DISABLED=true)
}
host_field() { "$VENV/bin/python" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$host"; }
