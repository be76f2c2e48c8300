#!/usr/bin/env bash
# The release binary's link order (build.rs, README: Benchmarks). Two commands:
#
#   bench/link-order.sh make    (`make link-order`) runs the release daemon under callgrind
#                               (as users run it, against moto), records the functions its
#                               request paths and its start-up execute, and writes them to
#                               bench/link-order.txt, request paths first; then relink.
#   bench/link-order.sh check [--warn] [BIN]
#                               whether BIN (the release binary) was linked in the listed order:
#                               how many of the listed names it has (under 90%, the list is
#                               stale: code, dependencies or rustc changed since it was made, so
#                               the functions it names lie scattered again and idle memory grows)
#                               and whether they come first in its code (not, when build.rs
#                               found a linker without the option). Fails on either; with
#                               --warn, says so and succeeds (`make package` runs it so: the
#                               binary works the same, and a rustc update must not stop a
#                               release).
#
# The kernel maps a binary's code 64 KiB at a time around each page touched, so functions laid
# out together cost what they weigh, scattered ones cost 64 KiB each. Names are the binary's own
# mangled symbols: they come from, and only match, a release build of this tree (debug and
# profiling builds hash symbol names differently), which keeps its symbol table for this.
set -euo pipefail
# Symbol names sort and compare bytewise.
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ORDER=$ROOT/bench/link-order.txt
MIN_PERCENT=90

# text_symbols BIN: the names of the functions BIN defines.
text_symbols() { nm --defined-only "$1" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u; }
# listed: the names in the order file, without its comments.
listed() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$ORDER"; }

check() {
  local strict=1
  [ "${1:-}" = --warn ] && { strict=0; shift; }
  local bin=${1:-$ROOT/target/release/assume-roled}
  [ -s "$ORDER" ] || { echo "link-order: $ORDER is missing: run make link-order" >&2; exit 1; }
  [ -f "$bin" ] || { echo "link-order: no binary at $bin: build it first" >&2; exit 1; }
  local symbols names total present first problem=
  symbols=$(text_symbols "$bin" 2>/dev/null) || symbols=
  [ -n "$symbols" ] ||
    { echo "link-order: $bin has no symbol table (stripped, or not a program): nothing to check" >&2; exit 1; }
  total=$(listed | wc -l)
  [ "$total" -gt 0 ] || { echo "link-order: $ORDER lists no functions: run make link-order" >&2; exit 1; }
  names=$(listed | sort -u)
  present=$(comm -12 <(echo "$names") <(echo "$symbols") | wc -l)
  # Laid out in order, the listed functions are the first $present in the code, give or take
  # the few the list names twice or the linker folded together.
  first=$(by_address "$bin" | awk -v n="$present" 'NR <= n' | sort -u | comm -12 - <(echo "$names") | wc -l)
  echo "link-order: $present of $total listed functions are in $bin; $first of them come first"
  if [ $((present * 100)) -lt $((total * MIN_PERCENT)) ]; then
    problem="the list is stale (made $(made_with)); run make link-order and commit it"
  elif [ $((first * 100)) -lt $((present * MIN_PERCENT)) ]; then
    problem="the binary was not linked in the listed order: built with ASSUME_ROLED_LINK_ORDER=0, or with a linker other than lld (build.rs said which in a warning, hidden by cargo --quiet: see target/*/build/assume-roled-*/output)"
  fi
  [ -z "$problem" ] && return 0
  echo "link-order: $problem; idle memory is about 3 MiB higher" >&2
  [ "$strict" = 0 ] || exit 1
}

# by_address BIN: BIN's functions in the order they lie in its code.
by_address() { nm -n --defined-only "$1" | awk '$2 ~ /^[tTwW]$/ && !seen[$3]++ {print $3}'; }
# made_with: the commit and rustc the order file's header names.
made_with() { sed -n '/^# Made by /{s/.* from \(.*\):$/\1/p;q;}' "$ORDER"; }

# executed DUMP...: the functions the callgrind dumps have costs for, in the order they name them.
executed() { sed -n 's/^fn=\(([0-9]*) \)\{0,1\}//p' "$@" | awk '!seen[$0]++'; }

make_order() {
  command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null ||
    { echo "link-order: install valgrind" >&2; exit 1; }
  command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null ||
    { echo "link-order: install wrk" >&2; exit 1; }
  # A first build without an order file gives the same names; with one, the layout changes
  # but not the names.
  cargo build --release --quiet --bin assume-roled
  # shellcheck source=common.sh
  source "$ROOT/bench/common.sh"
  local real=$BIN dumps=$work/callgrind
  mkdir -p "$dumps"
  BIN=$work/under-callgrind
  printf '#!/bin/sh\nexec valgrind --quiet --tool=callgrind --demangle=no --compress-strings=no --callgrind-out-file=%s/out.%%p %s "$@"\n' \
    "$dumps" "$real" >"$BIN"
  chmod +x "$BIN"
  # The daemon is slow under callgrind: ready can take seconds.
  local port
  port=$(free_port)
  say "the daemon under callgrind: start-up"
  start_daemon "$port" "" restricted
  wait_until ready "$port" || wait_until ready "$port"
  sleep 1
  # Dump 1: start-up and a second idle. Counters restart at each dump.
  callgrind_control --dump=startup "$daemon_pid" >/dev/null
  say "the request paths"
  local token imds metadata=/latest/meta-data/iam/security-credentials
  token=$(cat "$work/token")
  imds=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "http://127.0.0.1:$port/latest/api/token")
  for _ in 1 2 3; do
    curl -sf -o /dev/null -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo"
    curl -sf -o /dev/null -H "Authorization: $token" -H 'Connection: close' "http://127.0.0.1:$port/roles/piyo"
    curl -sf -o /dev/null -H "X-aws-ec2-metadata-token: $imds" "http://127.0.0.1:$port$metadata/"
    curl -sf -o /dev/null -H "X-aws-ec2-metadata-token: $imds" "http://127.0.0.1:$port$metadata/piyo-role"
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"
    curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"
  done
  wrk -t1 -c16 -d2s -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo" >/dev/null
  wrk -t1 -c16 -d2s -H "X-aws-ec2-metadata-token: $imds" "http://127.0.0.1:$port$metadata/piyo-role" >/dev/null
  # Dump 2: the request paths. What runs only at a stop is left out: it is not worth memory.
  callgrind_control --dump=requests "$daemon_pid" >/dev/null
  kill "$daemon_pid"
  wait "$daemon_pid" || true
  # callgrind names a dump <out-file>.<dump number>: one process, so one of each.
  local requests=("$dumps"/out.*.2) startup=("$dumps"/out.*.1) names
  [ ${#requests[@]} = 1 ] && [ -f "${requests[0]}" ] && [ ${#startup[@]} = 1 ] && [ -f "${startup[0]}" ] ||
    { echo "link-order: expected one start-up and one request dump in $dumps" >&2; exit 1; }
  names=$(executed "${requests[0]}" "${startup[0]}" | grep -Fxf <(text_symbols "$real") || true)
  [ -n "$names" ] || { echo "link-order: none of the executed functions is in $real" >&2; exit 1; }
  {
    echo "# Made by bench/link-order.sh on $(date -u '+%Y-%m-%d %H:%M UTC') from $(git -C "$ROOT" rev-parse --short HEAD) with $("${RUSTC:-rustc}" -V | cut -d' ' -f1-2):"
    echo "# the functions the release daemon ran on its request paths, then at start-up; build.rs"
    echo "# hands the list to lld (--symbol-ordering-file), which lays them out first, in this order."
    echo "$names"
  } >"$ORDER"
  say "$(listed | wc -l) functions listed in $ORDER; relinking"
  cargo build --release --quiet --bin assume-roled
  check "$real"
}

case "${1:-}" in
  make) make_order ;;
  check) shift; check "$@" ;;
  *) echo "usage: $0 make | check [--warn] [BIN]" >&2; exit 2 ;;
esac
