#!/usr/bin/env bash
# Benchmarks (`make bench`). Every figure is a ratio or a count measured side by side in the same
# run, because absolute times drift on shared machines. All load is on loopback and every step
# stops by itself. Results are appended to bench/results.md with machine, date and versions.
#
#   1. CPU time per request (every thread, user and system) and throughput of GET /roles/<name>
#      and the IMDS credentials path over 64 keep-alive connections with wrk, in the
#      configurations users run (the installed starter configuration; and with [imds] and
#      allowed_users, which the metadata path needs; default logging, audit on), against a bare
#      hyper server sent the same requests (same headers) and answering the same bytes, in
#      alternating rounds, every round shown; 1c (run
#      right after 1, against the same servers). latency at a steady load, well under either
#      server's limit; 1b. the peer lookup on and off: two fresh daemons whose configurations
#      differ in `peer_lookup` alone;
#   2. AssumeRole calls reaching STS with 1, 10, 100 and 1000 concurrent clients, all there
#      before the first credentials (STS answers in 3 s; checked by their early 503s);
#   3. the aws CLI through assume-roled versus a profile with role_arn + credential_source;
#      the same, and boto3, through a credential_process profile (`assume-roled credentials`),
#      and one `assume-roled credentials` call alone;
#   4. resident memory idle and under 1000 connections;
#   5. start-up time to /readyz, minus the STS round trip;
#   6. stripped binary size and cold release build time.
#
# Knobs: DURATION (s per wrk run, default 2), ROUNDS (alternating rounds, 9), INVOCATIONS (aws
# CLI runs per method, 100), LOOKUP_ROUNDS (peer lookup on/off rounds, 3), STEADY_PAUSE_MS (1c's
# pause per connection after each answer, 1), PIN=0 lets servers and load generator share both
# cores, COLD_BUILD=0 skips the cold build (it takes minutes).
source "$(dirname "$0")/common.sh"
command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null || { echo "install wrk" >&2; exit 1; }; }

say "building release binaries"
cargo build --release --quiet --example bench_baseline
# The daemon alone, as `make` and the packages build it: built with an example, it would get the
# dev-dependencies' features (tokio's test-util), other symbol names in its dependencies, and a
# link order that no longer matches them (build.rs): not the binary users run.
cargo build --release --quiet --bin assume-roled
# Measured as shipped: say so when the link order is stale or was not applied.
"$ROOT/bench/link-order.sh" check --warn "$ROOT/target/release/assume-roled"


# Two daemons, side by side: the installed starter configuration (the ECS path as most users
# run it), and the same with [imds] and allowed_users (the metadata path needs both).
port=$(free_port)
start_daemon "$port"
daemon=$daemon_pid
rport=$(free_port)
start_daemon "$rport" "" restricted
restricted=$daemon_pid
wait_until ready "$port"
wait_until ready "$rport"
sleep 1
idle_rss=$(rss_kib "$daemon")
# The daemon's own memory; the rest of the resident set is pages of files (the binary, the C
# library) that the kernel maps around what start-up touched and can drop under pressure.
idle_anon=$(anon_kib "$daemon")
start_baseline "$rport"

# load NAME PID URL [HEADER...]: wrk, one thread (the other core is the server's), 64
# connections; prints the RESULT line with cpu_us: the CPU time (user and system, every thread)
# the server PID spent per request answered. Where wrk is the bottleneck, requests per second
# hide the server's own cost (its extra work overlaps wrk's); CPU per request does not.
load() {
  local name=$1 pid=$2 url=$3 before after line
  shift 3
  local headers=() header
  for header in "$@"; do headers+=(-H "$header"); done
  before=$(cpu_ticks "$pid")
  line=$("${load_cpu[@]}" wrk -t1 -c64 -d"${DURATION}s" -s bench/latency.lua "${headers[@]}" "$url" | grep '^RESULT')
  after=$(cpu_ticks "$pid")
  awk -v line="$line" -v name="$name" -v ticks=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {
    sub(/^RESULT/, name, line); split(line, parts, "requests="); split(parts[2], n, " ")
    printf "%s cpu_us=%.2f\n", line, ticks * 1e6 / hz / n[1] }'
}
# warm URL [wrk options]: one second of load, discarded (first connections, cold caches).
warm() { "${load_cpu[@]}" wrk -t1 -c64 -d1s "$@" >/dev/null; }
rps() { awk -v r="$(field requests "$1")" -v s="$(field seconds "$1")" 'BEGIN { printf "%.0f", r / s }'; }
# ms MICROSECONDS: in milliseconds, two decimals.
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
# median: the middle of the numbers on stdin (the lower middle one when ROUNDS is even).
median() { sort -n | sed -n "$(((ROUNDS + 1) / 2))p"; }
metadata_path=/latest/meta-data/iam/security-credentials/piyo-role
say "1. CPU per request and throughput against a bare hyper server: $ROUNDS alternating rounds, ${DURATION}s each"
# Rounds alternate baseline and daemons, so that drift on a shared machine hits all alike.
warm -H "Authorization: $token" "$baseline/roles/piyo"
warm -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo"
warm -H "Authorization: $token" "http://127.0.0.1:$rport/roles/piyo"
warm -H "X-aws-ec2-metadata-token: $imds_token" "http://127.0.0.1:$rport$metadata_path"
rounds=()
for round in $(seq "$ROUNDS"); do
  b=$(load baseline "$baseline_pid" "$baseline/roles/piyo" "Authorization: $token")
  e=$(load ecs "$daemon" "http://127.0.0.1:$port/roles/piyo" "Authorization: $token")
  re=$(load ecs-restricted "$restricted" "http://127.0.0.1:$rport/roles/piyo" "Authorization: $token")
  bi=$(load baseline-imds "$baseline_pid" "$baseline$metadata_path" "X-aws-ec2-metadata-token: $imds_token")
  i=$(load imds "$restricted" "http://127.0.0.1:$rport$metadata_path" "X-aws-ec2-metadata-token: $imds_token")
  printf 'round %s\n%s\n%s\n%s\n%s\n%s\n' "$round" "$b" "$e" "$re" "$bi" "$i" >&2
  rounds+=("$b|$e|$re|$bi|$i")
done
# column N: the Nth result line (1: baseline, 2: ecs, 3: ecs-restricted, 4: baseline-imds,
# 5: imds) of every round.
column() { printf '%s\n' "${rounds[@]}" | cut -d'|' -f"$1"; }
# per_round FIGURE BASE DAEMON: BASE's FIGURE over DAEMON's, round by round, in round order.
per_round() {
  paste -d'|' <(column "$2") <(column "$3") | while IFS='|' read -r base own; do
    ratio "$(figure "$1" "$base")" "$(figure "$1" "$own")"; echo
  done
}
# figure NAME LINE: cpu_us or rps of a result line.
figure() { if [ "$1" = rps ]; then rps "$2"; else field "$1" "$2"; fi; }
# path_row LABEL BASE DAEMON TARGET: the CPU-per-request row of one path and configuration
# (baseline's cost over the daemon's: 1 means no extra cost), then its requests/s row; every
# round's ratio shown, in round order, the headline their median.
path_row() {
  local cpu_ratios rps_ratios
  cpu_ratios=$(per_round cpu_us "$2" "$3" | tr '\n' ' ')
  rps_ratios=$(per_round rps "$3" "$2" | tr '\n' ' ')
  printf '| %s: CPU per request (µs, user + system, every thread; medians of %s rounds) | %s | %s | **%s** (rounds: %s) | %s |\n' \
    "$1" "$ROUNDS" "$(column "$3" | while read -r l; do field cpu_us "$l"; done | median)" \
    "$(column "$2" | while read -r l; do field cpu_us "$l"; done | median)" \
    "$(tr ' ' '\n' <<<"$cpu_ratios" | grep . | median)" "$cpu_ratios" "$4"
  printf '| %s: requests/s (64 conns, %s s; the load generator shares the machine) | %s | %s | %s (rounds: %s) | - |\n' \
    "$1" "$DURATION" "$(column "$3" | while read -r l; do rps "$l"; echo; done | median)" \
    "$(column "$2" | while read -r l; do rps "$l"; echo; done | median)" \
    "$(tr ' ' '\n' <<<"$rps_ratios" | grep . | median)" "$rps_ratios"
}
errors() { echo $(($(field errors "$1") + $(field non2xx "$1"))); }
say "1c. latency at a steady load: $ROUNDS alternating rounds, each connection pausing ${STEADY_PAUSE_MS} ms between requests"
# Under section 1's saturating load both servers answer as fast as wrk asks, and the 64
# requests in flight queue wherever the slower of wrk and the server is; wrk counts a request's
# time from its write, so time queued at the server counts and time waiting in wrk does not.
# With every connection pausing after each answer, the load stays well under either server's
# limit, and latency comes closer to the server's own answer time. Still closed-loop: a stalled
# connection sends nothing meanwhile, so stalls are under-counted (an open-loop generator such
# as wrk2 would not; it is not packaged here).
steady_rounds=()
for round in $(seq "$ROUNDS"); do
  b=$(WRK_PAUSE_MS=$STEADY_PAUSE_MS load baseline "$baseline_pid" "$baseline/roles/piyo" "Authorization: $token")
  e=$(WRK_PAUSE_MS=$STEADY_PAUSE_MS load ecs "$daemon" "http://127.0.0.1:$port/roles/piyo" "Authorization: $token")
  bi=$(WRK_PAUSE_MS=$STEADY_PAUSE_MS load baseline-imds "$baseline_pid" "$baseline$metadata_path" \
    "X-aws-ec2-metadata-token: $imds_token")
  i=$(WRK_PAUSE_MS=$STEADY_PAUSE_MS load imds "$restricted" "http://127.0.0.1:$rport$metadata_path" \
    "X-aws-ec2-metadata-token: $imds_token")
  printf 'steady round %s\n%s\n%s\n%s\n%s\n' "$round" "$b" "$e" "$bi" "$i" >&2
  steady_rounds+=("$b|$e|$bi|$i")
done
# steady_line ROUND NAME: server NAME's result line of steady round ROUND.
steady_line() { tr '|' '\n' <<<"${steady_rounds[$1]}" | grep "^$2 "; }
# steady_row LABEL DAEMON BASELINE: section 1c's row for one path: the p50, p99 and p99.9 of
# the round whose p99 ratio (daemon over baseline) is the median, so every figure of a row
# comes from one round, and every round's p99 ratio beside them.
steady_row() {
  local ratios=() r own base chosen
  for r in $(seq 0 $((ROUNDS - 1))); do
    own=$(steady_line "$r" "$2") base=$(steady_line "$r" "$3")
    [ -n "$(field p99 "$own")" ] && [ -n "$(field p99 "$base")" ] || { echo "1c: no p99 in round $r" >&2; exit 1; }
    ratios+=("$(ratio "$(field p99 "$own")" "$(field p99 "$base")") $r")
  done
  chosen=$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
  own=$(steady_line "${chosen#* }" "$2") base=$(steady_line "${chosen#* }" "$3")
  printf '| %s at a steady load (64 conns, %s ms pause: %s vs %s req/s), p50 / p99 / p99.9 (ms), the median round of %s | %s / %s / %s | %s / %s / %s | p99 %s (rounds: %s) | ≤ 1.5 |' \
    "$1" "$STEADY_PAUSE_MS" "$(rps "$own")" "$(rps "$base")" "$ROUNDS" \
    "$(ms "$(field p50 "$own")")" "$(ms "$(field p99 "$own")")" "$(ms "$(field p999 "$own")")" \
    "$(ms "$(field p50 "$base")")" "$(ms "$(field p99 "$base")")" "$(ms "$(field p999 "$base")")" \
    "${chosen%% *}" "$(printf '%s\n' "${ratios[@]}" | cut -d' ' -f1 | tr '\n' ' ')"
}
steady_ecs_row=$(steady_row "GET /roles/piyo" ecs baseline)
steady_imds_row=$(steady_row "IMDS credentials" imds baseline-imds)
say "1b. the cost of finding each connection's user: two fresh daemons, the starter configuration with the lookup on (default) and off, keep-alive and a new connection per request"
p_on=$(free_port)
start_daemon "$p_on"
lookup_pid=$daemon_pid
p_off=$(free_port)
start_daemon "$p_off" "peer_lookup = false"
no_lookup_pid=$daemon_pid
wait_until ready "$p_on"
wait_until ready "$p_off"
warm -H "Authorization: $token" "http://127.0.0.1:$p_on/roles/piyo"
warm -H "Authorization: $token" "http://127.0.0.1:$p_off/roles/piyo"
lookup_rounds=()
for round in $(seq "$LOOKUP_ROUNDS"); do
  on=$(load lookup "$lookup_pid" "http://127.0.0.1:$p_on/roles/piyo" "Authorization: $token")
  off=$(load no-lookup "$no_lookup_pid" "http://127.0.0.1:$p_off/roles/piyo" "Authorization: $token")
  close_on=$(load close-lookup "$lookup_pid" "http://127.0.0.1:$p_on/roles/piyo" "Authorization: $token" "Connection: close")
  close_off=$(load close-no-lookup "$no_lookup_pid" "http://127.0.0.1:$p_off/roles/piyo" "Authorization: $token" "Connection: close")
  printf 'lookup round %s\n%s\n%s\n%s\n%s\n' "$round" "$on" "$off" "$close_on" "$close_off" >&2
  lookup_rounds+=("$on|$off|$close_on|$close_off")
done
# lookup_row LABEL ON OFF: per-request CPU of the lookup on over off (the lookup's cost: above 1
# is extra work), and requests/s off over on, median of the rounds and every round.
lookup_row() {
  local cpu=() rate=() r on off
  for r in "${lookup_rounds[@]}"; do
    on=$(cut -d'|' -f"$2" <<<"$r") off=$(cut -d'|' -f"$3" <<<"$r")
    cpu+=("$(ratio "$(field cpu_us "$on")" "$(field cpu_us "$off")")")
    rate+=("$(ratio "$(rps "$on")" "$(rps "$off")")")
  done
  local rounds_=$ROUNDS
  ROUNDS=$LOOKUP_ROUNDS
  printf '| %s: CPU per request, peer lookup on over off (1 = free), median of %s rounds | %s | - | %s (rounds: %s) | ≤ 1.1 |\n' \
    "$1" "$LOOKUP_ROUNDS" "$(printf '%s\n' "${cpu[@]}" | median)" "$(printf '%s\n' "${cpu[@]}" | median)" "${cpu[*]}"
  printf '| %s: requests/s, lookup on over off | %s | - | %s (rounds: %s) | ≥ 0.9 |\n' \
    "$1" "$(printf '%s\n' "${rate[@]}" | median)" "$(printf '%s\n' "${rate[@]}" | median)" "${rate[*]}"
  ROUNDS=$rounds_
}
lookup_rows=$(lookup_row "GET /roles/piyo, keep-alive" 1 2; lookup_row "GET /roles/piyo, a new connection per request" 3 4)
lookup_peak_rss=$(hwm_kib "$lookup_pid")
kill "$lookup_pid" "$no_lookup_pid"
for round in "${rounds[@]}" "${steady_rounds[@]}" "${lookup_rounds[@]}"; do
  IFS='|' read -r -a parts <<<"$round"
  for line in "${parts[@]}"; do
    [[ "$line" == *requests=* ]] || continue
    [ "$(errors "$line")" = 0 ] || { echo "errors under load: $line" >&2; exit 1; }
  done
done
# The rest measures counts, memory and start-up as the daemon runs unpinned.
server_cpu=()

say "4. memory: under 1000 connections (idle was measured after start)"
wrk -t2 -c1000 -d5s -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo" >/dev/null &
loader=$!
peak_rss=0
while kill -0 "$loader" 2>/dev/null; do
  current=$(rss_kib "$daemon")
  [ "$current" -gt "$peak_rss" ] && peak_rss=$current
  sleep 0.1
done
wait "$loader" || true

say "2. AssumeRole calls with 1, 10, 100, 1000 concurrent clients (fresh daemon each, 5 s)"
# STS takes 3 s to answer meanwhile, so the clients are there before the first credentials
# (their first answers, after the 1.5 s start hold, are 503s): each count is checked to include
# such answers, or the figure would show nothing about concurrent clients.
proxy_mode() { curl -sf -X POST --data "$1" "$sts/__proxy/mode" >/dev/null; }
proxy_mode delay:3
sts_counts=()
for clients in 1 10 100 1000; do
  before=$(assume_role_calls)
  p=$(free_port)
  start_daemon "$p"
  # wrk gives up at once if its first connection is refused: the port is bound first (the
  # daemon then holds connections in the backlog until its first STS attempt ends).
  wait_until "$VENV/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $p), 0.5)"
  threads=$((clients < 2 ? 1 : 2))
  early=$(wrk -t"$threads" -c"$clients" -d5s -H "Authorization: $token" "http://127.0.0.1:$p/roles/piyo" 2>&1 |
    awk '/Non-2xx or 3xx responses/ {print $NF}' || true)
  [ "${early:-0}" -gt 0 ] || { echo "2: the $clients clients got no answer before the first credentials" >&2; exit 1; }
  # Under load the Python stand-ins answer slowly; the count is taken once the daemon is ready.
  wait_until ready "$p" || { echo "daemon for $clients clients not ready" >&2; exit 1; }
  kill "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
  sts_counts+=("$clients:$(($(assume_role_calls) - before))")
done
proxy_mode pass
echo "${sts_counts[*]}" >&2

say "5. start-up to /readyz, minus the STS round trip (median of 9)"
last_assume_role_ms() { curl -s "$sts/__proxy/stats" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["AssumeRole_last_ms"])'; }
startups=()
for _ in $(seq 9); do
  p=$(free_port)
  t0=$(date +%s%N)
  start_daemon "$p"
  until ready "$p" >/dev/null 2>&1; do sleep 0.002; done
  t1=$(date +%s%N)
  # Start-up of the daemon itself: time to ready minus the AssumeRole it waited for.
  startups+=("$(awk -v t="$(((t1 - t0) / 1000))" -v s="$(last_assume_role_ms)" 'BEGIN { printf "%d %d", t, s * 1000 }')")
  kill "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
done
read -r startup_us sts_rtt_us <<<"$(printf '%s\n' "${startups[@]}" | sort -n | sed -n 5p)"

say "3. aws sts get-caller-identity: through assume-roled vs a role_arn profile, $INVOCATIONS runs each"
cli_home=$work/home
mkdir -p "$cli_home/.aws"
# The usual set-up on EC2: the profile's source is the instance profile, here the metadata double.
"$VENV/bin/python" tests/support/imds_double.py "$host" >"$work/imds.port" 2>/dev/null &
pids+=($!)
wait_until test -s "$work/imds.port"
cat >"$cli_home/.aws/config" <<EOF
[profile piyo]
role_arn = arn:aws:iam::444455556666:role/piyo-role
credential_source = Ec2InstanceMetadata
EOF
client_env=(HOME="$cli_home" PATH="$PATH" AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL="$sts")
# run_cli LABEL ENV...: total milliseconds for INVOCATIONS runs, and AssumeRole calls they caused.
run_cli() {
  local label=$1
  shift
  local before t0 t1 arn
  before=$(assume_role_calls)
  t0=$(now_ms)
  # The first run also checks who the CLI acts as; every run is timed and counted.
  arn=$(env -i "${client_env[@]}" "$@" "${client_cmd[@]}" | tail -n 1)
  [[ "$arn" == arn:aws:sts::444455556666:assumed-role/piyo-role/* ]] || { echo "$label acts as $arn" >&2; exit 1; }
  for _ in $(seq 2 "$INVOCATIONS"); do
    env -i "${client_env[@]}" "$@" "${client_cmd[@]}" >/dev/null
  done
  t1=$(now_ms)
  echo "$label $((t1 - t0)) $(($(assume_role_calls) - before))"
}
client_cmd=("$VENV/bin/aws" sts get-caller-identity --query Arn --output text)
daemon_cli=$(run_cli daemon AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  AWS_EC2_METADATA_DISABLED=true AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:$port/roles/piyo" \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/token")
rm -rf "$cli_home/.aws/cli"
profile_cli=$(run_cli profile AWS_CONFIG_FILE="$cli_home/.aws/config" AWS_PROFILE=piyo \
  AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$(head -n 1 "$work/imds.port")/")
cached_secrets=$(find "$cli_home/.aws" -path '*cli/cache*' -type f | wc -l)
# boto3 keeps no cache on disk: every new process assumes the role again.
client_cmd=("$VENV/bin/python" -c 'import boto3; print(boto3.client("sts").get_caller_identity()["Arn"])')
boto3_profile=$(run_cli boto3-profile AWS_CONFIG_FILE="$cli_home/.aws/config" AWS_PROFILE=piyo \
  AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$(head -n 1 "$work/imds.port")/")
boto3_daemon=$(run_cli boto3-daemon AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  AWS_EC2_METADATA_DISABLED=true AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:$port/roles/piyo" \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/token")
# A profile whose credential_process asks the daemon (what `assume-roled profiles` writes).
cat >>"$cli_home/.aws/config" <<EOF
[profile piyo-process]
credential_process = $BIN credentials --role piyo --config $work/d$port/config.toml
EOF
boto3_process=$(run_cli boto3-process AWS_CONFIG_FILE="$cli_home/.aws/config" AWS_PROFILE=piyo-process \
  AWS_EC2_METADATA_DISABLED=true)
client_cmd=("$VENV/bin/aws" sts get-caller-identity --query Arn --output text)
rm -rf "$cli_home/.aws/cli"
process_cli=$(run_cli process AWS_CONFIG_FILE="$cli_home/.aws/config" AWS_PROFILE=piyo-process \
  AWS_EC2_METADATA_DISABLED=true)
process_cached=$(find "$cli_home/.aws" -path '*cli/cache*' -type f | wc -l)
# One `credentials` call alone: the command's own start-up, the configuration, the token file
# and one request to the daemon.
t0=$(now_us)
for _ in $(seq "$INVOCATIONS"); do
  "$BIN" credentials --role piyo --config "$work/d$port/config.toml" >/dev/null
done
credentials_us=$((($(now_us) - t0) / INVOCATIONS))
printf '%s\n' "$daemon_cli" "$profile_cli" "$process_cli" "$boto3_daemon" "$boto3_profile" "$boto3_process" \
  "credentials $credentials_us us" >&2

say "6. binary size and cold build"
# The release binary keeps its symbol table (Cargo.toml); what is measured is the binary
# without it, which is what is loaded.
strip -o "$work/stripped" "$BIN"
size_bytes=$(stat -c %s "$work/stripped")
cold_build_s="not measured (COLD_BUILD=0)"
if [ "$COLD_BUILD" != 0 ]; then
  rm -rf "$ROOT/target/bench-cold"
  t0=$(now_ms)
  CARGO_TARGET_DIR="$ROOT/target/bench-cold" cargo build --release --quiet --bin assume-roled
  cold_build_s="$((($(now_ms) - t0) / 1000)) s"
  rm -rf "$ROOT/target/bench-cold"
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
  printf '\n## %s\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
  printf 'Machine: %s cores, %s, %s GiB; Linux %s. assume-roled %s (release), %s, %s.\n\n' \
    "$(nproc)" "$cpu" "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$(uname -r)" \
    "$("$BIN" --version | cut -d' ' -f2)" "$(rustc --version | cut -d' ' -f1-2)" "$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  printf '| measure | assume-roled | baseline | ratio | target |\n|---|---|---|---|---|\n'
  path_row "GET /roles/piyo, starter configuration" 1 2 "≥ 0.95"
  path_row "IMDS credentials, [imds] + allowed_users" 4 5 "≥ 0.95"
  path_row "GET /roles/piyo, [imds] + allowed_users" 1 3 "-"
  printf '%s\n' "$lookup_rows"
  printf '| peak resident memory of the daemon with the lookup on after these runs | %s MiB | - | - | - |\n' \
    "$(mib "$lookup_peak_rss")"
  printf '%s\n' "$steady_ecs_row" "$steady_imds_row"
  printf '\n| measure | result | target |\n|---|---|---|\n'
  printf '| AssumeRole calls in 5 s from a cold start, by concurrent clients (all there before the first credentials) | %s | the same for all |\n' "${sts_counts[*]}"
  read -r _ d_ms d_calls <<<"$daemon_cli"
  read -r _ p_ms p_calls <<<"$profile_cli"
  printf '| %s × `aws sts get-caller-identity` through assume-roled | %s s each, %s AssumeRole calls | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$d_ms")" "$d_calls"
  printf '| %s × the same with a `role_arn` + `credential_source = Ec2InstanceMetadata` profile | %s s each, %s AssumeRole calls, %s credential files written to ~/.aws/cli/cache | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$p_ms")" "$p_calls" "$cached_secrets"
  read -r _ c_ms c_calls <<<"$process_cli"
  printf '| %s × the same with a `credential_process` profile (`assume-roled credentials`, as `profiles` writes it) | %s s each, %s AssumeRole calls, %s credential files written to ~/.aws/cli/cache | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$c_ms")" "$c_calls" "$process_cached"
  read -r _ bd_ms bd_calls <<<"$boto3_daemon"
  read -r _ bp_ms bp_calls <<<"$boto3_profile"
  printf '| %s × a one-shot boto3 script (`get_caller_identity`) through assume-roled | %s s each, %s AssumeRole calls | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$bd_ms")" "$bd_calls"
  printf '| %s × the same script with the `role_arn` profile | %s s each, %s AssumeRole calls | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$bp_ms")" "$bp_calls"
  read -r _ bc_ms bc_calls <<<"$boto3_process"
  printf '| %s × the same script with the `credential_process` profile | %s s each, %s AssumeRole calls | - |\n' \
    "$INVOCATIONS" "$(per_run_s "$bc_ms")" "$bc_calls"
  printf '| one `assume-roled credentials` call (start-up, configuration, token file, one request), mean of %s | %s ms | ≤ 20 ms |\n' \
    "$INVOCATIONS" "$(ms "$credentials_us")"
  printf '| resident memory, idle, one role (of which anonymous: the daemon'"'"'s own) | %s MiB (%s MiB) | ≤ 10 MiB |\n' \
    "$(mib "$idle_rss")" "$(mib "$idle_anon")"
  printf '| resident memory, peak under 1000 connections | %s MiB | ≤ 30 MiB |\n' "$(mib "$peak_rss")"
  printf '| start-up to ready (median of 9) | %s ms, of which the STS round trip %s ms: %s ms own | ≤ 50 ms |\n' \
    "$(ms "$startup_us")" "$(ms "$sts_rtt_us")" "$(ms "$((startup_us - sts_rtt_us))")"
  printf '| stripped release binary | %s MiB | ≤ 15 MiB |\n' "$(awk -v b="$size_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')"
  printf '| cold release build (all dependencies) | %s | - |\n' "$cold_build_s"
} | tee -a "$RESULTS"
