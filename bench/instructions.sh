#!/usr/bin/env bash
# Instructions per request on the ECS hot path, under callgrind: a count, not a time, so it is
# the same from run to run whatever else the machine does (two cores shared with wrk and moto
# make requests per second and CPU time per request move by 10-15 % between runs). For
# comparing two builds of a change on the request path:
#
#   bench/instructions.sh [BIN ...]     (default: target/release/assume-roled)
#
# Each binary runs as users run it (defaults, audit on, bench/common.sh's configuration) under
# `valgrind --tool=callgrind`; its counters are zeroed once it is ready and has answered three
# requests, wrk sends it 20 s of requests over 8 connections, and the count is divided by the
# requests answered. Every thread of the daemon is counted; the kernel's work is not.
source "$(dirname "$0")/common.sh"
command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null || { echo "install valgrind" >&2; exit 1; }; }
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "install wrk" >&2; exit 1; }; }
[ $# -gt 0 ] || { cargo build --release --quiet --bin assume-roled; set -- "$ROOT/target/release/assume-roled"; }
for BIN in "$@"; do
  out=$(mktemp)
  server_cpu=(valgrind --tool=callgrind --trace-children=yes "--callgrind-out-file=$out")
  port=$(free_port)
  start_daemon "$port"
  # Slow to start under callgrind.
  for _ in 1 2 3 4 5 6; do wait_until ready "$port" && break; done
  token=$(cat "$work/token")
  for _ in 1 2 3; do curl -s -o /dev/null -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo"; done
  callgrind_control -z "$daemon_pid" >/dev/null
  requests=$(wrk -t1 -c8 -d20s -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo" |
    awk '/requests in/ {print $1}')
  callgrind_control -d "$daemon_pid" >/dev/null
  sleep 1
  ir=$(callgrind_annotate "$out".* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
  rm -f "$out" "$out".*
  echo "$BIN: $requests requests, $(awk -v i="$ir" -v r="$requests" 'BEGIN { printf "%.0f", i / r }') instructions per request"
done
