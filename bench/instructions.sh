#!/usr/bin/env bash
# Instructions per request on the two hot paths, under callgrind, for the daemon and the bare
# server (examples/bench_baseline.rs) sent the same requests: a count, not a time, so it is the
# same from run to run whatever else the machine does (two cores shared with wrk and moto
# make requests per second and CPU time per request move by 10-15 % between runs). For
# comparing two builds of a change on the request path:
#
#   bench/instructions.sh [BIN ...]     (default: target/release/assume-roled)
#
# Each binary runs as users run it (defaults, audit on, bench/common.sh's configuration with
# [imds] and allowed_users, which the metadata path needs) under `valgrind --tool=callgrind`;
# its counters are zeroed once it is ready and has answered three requests, wrk sends it 10 s
# of requests over 8 connections, and the count is divided by the requests answered. Every
# thread is counted; the kernel's work is not. Prints, per path, the daemon's count, the bare
# server's, and the bare server's over the daemon's.
source "$(dirname "$0")/common.sh"
command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null || { echo "install valgrind" >&2; exit 1; }; }
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "install wrk" >&2; exit 1; }; }
cargo build --release --quiet --example bench_baseline
[ $# -gt 0 ] || { cargo build --release --quiet --bin assume-roled; set -- "$ROOT/target/release/assume-roled"; }
metadata_path=/latest/meta-data/iam/security-credentials/piyo-role

# counted PID URL HEADER: PID's instructions per request for URL, sent with HEADER.
counted() {
  local pid=$1 url=$2 header=$3 out=$4 requests ir
  for _ in 1 2 3; do curl -s -o /dev/null -H "$header" "$url"; done
  callgrind_control -z "$pid" >/dev/null
  requests=$(wrk -t1 -c8 -d"${SECONDS_PER_RUN:-10}"s -H "$header" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  ir=$(callgrind_annotate "$out".* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  rm -f "$out".*
  awk -v i="$ir" -v r="$requests" 'BEGIN { printf "%.0f", i / r }'
}

for BIN in "$@"; do
  daemon_out=$(mktemp) baseline_out=$(mktemp)
  # The daemon is started through env(1): callgrind follows it into the daemon.
  server_cpu=(valgrind --tool=callgrind --trace-children=yes "--callgrind-out-file=$daemon_out")
  port=$(free_port)
  start_daemon "$port" "" restricted
  # Slow to start under callgrind.
  for _ in 1 2 3 4 5 6; do wait_until ready "$port" && break; done
  server_cpu=(valgrind --tool=callgrind "--callgrind-out-file=$baseline_out")
  start_baseline "$port"
  daemon=http://127.0.0.1:$port
  ecs=$(counted "$daemon_pid" "$daemon/roles/piyo" "Authorization: $token" "$daemon_out")
  ecs_base=$(counted "$baseline_pid" "$baseline/roles/piyo" "Authorization: $token" "$baseline_out")
  imds=$(counted "$daemon_pid" "$daemon$metadata_path" "X-aws-ec2-metadata-token: $imds_token" "$daemon_out")
  imds_base=$(counted "$baseline_pid" "$baseline$metadata_path" "X-aws-ec2-metadata-token: $imds_token" "$baseline_out")
  kill "$daemon_pid" "$baseline_pid"; wait "$daemon_pid" "$baseline_pid" 2>/dev/null || true
  rm -f "$daemon_out" "$baseline_out"
  echo "$BIN: instructions per request, daemon / bare server (ratio): ECS $ecs / $ecs_base ($(ratio "$ecs_base" "$ecs")), IMDS $imds / $imds_base ($(ratio "$imds_base" "$imds"))"
done
