#!/usr/bin/env bash
# For work on the request path (not part of `make bench`): section 1 of bench/run.sh only, the
# daemon (defaults, audit on) against the bare hyper baseline, ROUNDS × DURATION s, printing
# each round's ratios. Knobs, besides common.sh's:
#   STAT=1      also the CPU time per request (user and system, from /proc) of both servers:
#               steadier than requests per second on a shared machine;
#   PERF=1      also a perf profile of each under load (/tmp/q/daemon.data, baseline.data);
#               build with `cargo build --profile profiling` and point DAEMON_BIN and
#               BASELINE_BIN at those binaries for symbols.
source "$(dirname "$0")/common.sh"
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "install wrk" >&2; exit 1; }; }
cargo build --release --quiet --example bench_baseline
# The daemon alone, as `make` and the packages build it: built with an example, it would get the
# dev-dependencies' features (tokio's test-util), other symbol names in its dependencies, and a
# link order that no longer matches them (build.rs): not the binary users run.
cargo build --release --quiet --bin assume-roled
# Measured as shipped: say so when the link order is stale or was not applied.
"$ROOT/bench/link-order.sh" check --warn "$ROOT/target/release/assume-roled"
BIN=${DAEMON_BIN:-$BIN}
BASELINE=${BASELINE_BIN:-$BASELINE}
port=$(free_port)
start_daemon "$port" "" restricted
daemon=$daemon_pid
wait_until ready "$port"
sleep 1; echo "idle $(rss_kib $daemon) KiB"
start_baseline "$port"
r() { "${load_cpu[@]}" wrk -t1 -c64 -d"${DURATION}s" "$@" | awk '/Requests\/sec/ {print $2}'; }
metadata=/latest/meta-data/iam/security-credentials/piyo-role
for round in $(seq "$ROUNDS"); do
  b=$(r -H "Authorization: $token" "$baseline/roles/piyo")
  e=$(r -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo")
  bi=$(r -H "X-aws-ec2-metadata-token: $imds_token" "$baseline$metadata")
  i=$(r -H "X-aws-ec2-metadata-token: $imds_token" "http://127.0.0.1:$port$metadata")
  echo "base $b ecs $e ($(ratio $e $b)) base-imds $bi imds $i ($(ratio $i $bi))"
done
if [ -n "${PERF:-}" ]; then
  mkdir -p "${PERF_DIR:-/tmp/q}"
  for target in "daemon:$daemon:http://127.0.0.1:$port/roles/piyo" "baseline:$baseline_pid:$baseline/roles/piyo"; do
    name=${target%%:*} rest=${target#*:}; pid=${rest%%:*} url=${rest#*:}
    perf record -F 4000 -g -p "$pid" -o "${PERF_DIR:-/tmp/q}/$name.data" -- sleep 3 >/dev/null 2>&1 &
    recorder=$!
    sleep 0.1; "${load_cpu[@]}" wrk -t1 -c64 -d3s -H "Authorization: $token" "$url" | awk '/requests in/ {print "'$name' requests", $1}'; wait $recorder
  done
fi
tail -3 "$work/d$port/log"
if [ -n "${STAT:-}" ]; then
  for target in "$daemon:http://127.0.0.1:$port/roles/piyo" "$baseline_pid:$baseline/roles/piyo"; do
    pid=${target%%:*} url=${target#*:}
    before=$(awk '{print $14, $15}' /proc/$pid/stat)
    out=$("${load_cpu[@]}" wrk -t1 -c64 -d3s -H "Authorization: $token" "$url")
    after=$(awk '{print $14, $15}' /proc/$pid/stat)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "$before $after $requests" | awk '{printf "user %.2f us/req, sys %.2f us/req, %d req\n", ($3-$1)*10000/$5, ($4-$2)*10000/$5, $5}'
  done
fi
