# Shared by the benchmarks (bench/run.sh, bench/sessions.sh, bench/quick.sh), sourced: paths, helpers that
# measure, and the AWS stand-ins (moto behind the counting STS proxy), which stop with the
# script. Sets: ROOT VENV BIN RESULTS sts, what tests/support/stand_ins.sh sets (work, pids,
# host_env and its helpers), and the helpers below (start_daemon:
# the daemon as users run it, serving piyo).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
DURATION=${DURATION:-2}
ROUNDS=${ROUNDS:-9}
LOOKUP_ROUNDS=${LOOKUP_ROUNDS:-3}
# Section 1c's steady load: each connection pauses this long after an answer (bench/latency.lua
# reads WRK_PAUSE_MS; unset, wrk saturates the server).
STEADY_PAUSE_MS=${STEADY_PAUSE_MS:-1}
unset WRK_PAUSE_MS
INVOCATIONS=${INVOCATIONS:-100}
COLD_BUILD=${COLD_BUILD:-1}
RESULTS=${RESULTS:-$ROOT/bench/results.md}
BIN=$ROOT/target/release/assume-roled
BASELINE=$ROOT/target/release/examples/bench_baseline

# The work directory, cleanup at exit, say, free_port, wait_until, start_moto.
source "$ROOT/tests/support/stand_ins.sh"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
now_us() { echo $(($(date +%s%N) / 1000)); }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# anon_kib PID: the resident memory that is the process's own (heap, stacks), not pages of files.
anon_kib() { awk '/^Anonymous/ {print $2}' "/proc/$1/smaps_rollup"; }
# mib KIB: in MiB, one decimal.
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
per_run_s() { awk -v m="$1" -v n="$INVOCATIONS" 'BEGIN { printf "%.3f", m / n / 1000 }'; }
# PIN=1: each server on the second core, the load generator on the first, so that neither
# moves between cores or takes the other's: the same conditions for the daemon and the baseline.
# The cores are the first two this script may use.
read -r -a usable <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
if [ "${PIN:-1}" = 1 ] && [ "${#usable[@]}" -ge 2 ] && command -v taskset >/dev/null; then
  server_cpu=(taskset -c "${usable[1]}") load_cpu=(taskset -c "${usable[0]}")
else
  server_cpu=() load_cpu=()
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

ulimit -n 65536 2>/dev/null || ulimit -n 4096

say "AWS stand-ins: moto behind a counting STS proxy"
start_moto
"$VENV/bin/python" tests/support/sts_proxy.py "http://127.0.0.1:$moto_port" >"$work/proxy.port" &
pids+=($!)
wait_until test -s "$work/proxy.port"
sts="http://127.0.0.1:$(head -n 1 "$work/proxy.port")"
assume_role_calls() { curl -s "$sts/__proxy/stats" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("AssumeRole", 0))'; }

# start_daemon PORT [SERVER_KEYS] [restricted]: a daemon on PORT serving piyo with the
# installed starter configuration (systemd/config.toml: one role, every default) and [sts]
# pointed at the stand-ins, plus [server] keys; sets daemon_pid. With `restricted`, also what a
# metadata set-up adds: piyo served as instance metadata ([imds], upstream unused here) and
# restricted to root (a metadata role always is).
start_daemon() {
  mkdir -p "$work/d$1"
  local metadata='' restriction=''
  if [ "${3:-}" = restricted ]; then
    metadata='[imds]
role = "piyo"
upstream = "http://127.0.0.1:9"'
    restriction='allowed_users = ["root"]'
  fi
  cat >"$work/d$1/config.toml" <<EOF
[server]
listen = "127.0.0.1:$1"
token_file = "$work/token"
${2:-}
[sts]
region = "us-east-1"
endpoint = "$sts"
$metadata
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
$restriction
EOF
  # The configuration users run: default logging, audit lines on.
  "${server_cpu[@]}" env -i PATH="$PATH" "${host_env[@]}" "$BIN" serve --config "$work/d$1/config.toml" \
    2>"$work/d$1/log" &
  daemon_pid=$!
  pids+=("$daemon_pid")
}
# cpu_ticks PID: the user and system time of every thread PID has run, live or ended, in clock
# ticks (/proc/PID/stat); CLK_TCK ticks a second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)
ready() { curl -sf "http://127.0.0.1:$1/readyz"; }

# start_baseline PORT: the bare server, answering with the very bytes the daemon on PORT (one
# started `restricted`: it serves both paths) serves for the ECS and the metadata paths; sets
# token, imds_token, baseline (its URL), baseline_pid.
start_baseline() {
  token=$(cat "$work/token")
  imds_token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "http://127.0.0.1:$1/latest/api/token")
  curl -sf -H "Authorization: $token" "http://127.0.0.1:$1/roles/piyo" >"$work/ecs.body"
  curl -sf -H "X-aws-ec2-metadata-token: $imds_token" \
    "http://127.0.0.1:$1/latest/meta-data/iam/security-credentials/piyo-role" >"$work/metadata.body"
  "${server_cpu[@]}" "$BASELINE" "$work/ecs.body" "$work/metadata.body" >"$work/baseline.addr" &
  baseline_pid=$!
  pids+=("$baseline_pid")
  wait_until test -s "$work/baseline.addr"
  baseline="http://$(head -n 1 "$work/baseline.addr")"
}
