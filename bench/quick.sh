#!/usr/bin/env bash
# Quick throughput check while working on the request path: section 1 of bench/run.sh only.
source "$(dirname "$0")/common.sh"
cargo build --release --quiet --bin assume-roled --example bench_baseline
BIN=${DAEMON_BIN:-$BIN}
port=$(free_port)
mkdir -p "$work/d"
cat >"$work/d/config.toml" <<EOF2
[server]
listen = "127.0.0.1:$port"
token_file = "$work/token"
[sts]
region = "us-east-1"
endpoint = "$sts"
[imds]
role = "piyo"
upstream = "http://127.0.0.1:9"
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
session_name = "bench"
allowed_users = ["root"]
EOF2
env -i PATH="$PATH" "${host_env[@]}" "$BIN" serve --config "$work/d/config.toml" 2>"$work/d/log" &
daemon=$!; pids+=($daemon)
wait_until curl -sf "http://127.0.0.1:$port/readyz"
sleep 1; echo "idle $(rss_kib $daemon) KiB"
token=$(cat "$work/token")
"$BASELINE" >"$work/baseline.addr" & pids+=($!)
wait_until test -s "$work/baseline.addr"
baseline="http://$(head -n 1 "$work/baseline.addr")"
imds_token=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "http://127.0.0.1:$port/latest/api/token")
r() { wrk -t1 -c64 -d"${DURATION}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
for round in $(seq "$ROUNDS"); do
  b=$(r "$baseline/roles/piyo")
  e=$(r -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo")
  i=$(r -H "X-aws-ec2-metadata-token: $imds_token" "http://127.0.0.1:$port/latest/meta-data/iam/security-credentials/piyo-role")
  echo "base $b ecs $e ($(ratio $e $b)) imds $i ($(ratio $i $b))"
done
if [ -n "${PERF:-}" ]; then
  perf record -F 2000 -g -p "$daemon" -o /tmp/q/perf.data -- sleep 4 >/dev/null 2>&1 &
  recorder=$!
  sleep 0.2; r -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo" >/dev/null; wait $recorder
fi
tail -3 "$work/d/log"
