#!/usr/bin/env bash
# The per-user sessions benchmark (part of `make bench`; alone: `bench/sessions.sh`). A role
# served per user (`session_name = "{user}@{host}"`), defaults otherwise (peer lookup and audit
# log on). USERS distinct local users (made for the run, `ar-bench-<n>`, and removed after it)
# each ask once, then all ask again:
#   - AssumeRole calls reaching STS (through the counting proxy): exactly USERS, and none more
#     for the second round;
#   - resident memory added per live session, two ways: everything the USERS sessions added
#     ((RSS after - RSS before) / USERS, which also counts what the first users' requests bring
#     in once: pages of code, the STS client's connection, buffers), and the marginal cost, what
#     the second half of the users added ((RSS after - RSS at half) / (USERS / 2)), which is what
#     one more session costs; each also as the daemon's own (anonymous: heap, stacks).
# Results are appended to bench/results.md.
source "$(dirname "$0")/common.sh"
USERS=${USERS:-1000}

say "making $USERS users"
# Removed on any exit, including one in the middle of making them.
remove_users() { for n in $(seq "$USERS"); do userdel "ar-bench-$n" 2>/dev/null || true; done; }
trap 'remove_users; cleanup' EXIT
for n in $(seq "$USERS"); do
  useradd --no-create-home --shell /usr/sbin/nologin "ar-bench-$n"
done

say "building the release binary"
cargo build --release --quiet --bin assume-roled

port=$(free_port)
cat >"$work/config.toml" <<CONFIG
[server]
listen = "127.0.0.1:$port"
token_file = "$work/token"
[sts]
region = "us-east-1"
endpoint = "$sts"
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
session_name = "{user}@{host}"
max_sessions = $USERS
CONFIG
env -i PATH="$PATH" "${host_env[@]}" "$BIN" serve --config "$work/config.toml" 2>"$work/log" &
daemon=$!
pids+=("$daemon")
wait_until curl -sf "http://127.0.0.1:$port/readyz"
token=$(cat "$work/token")
sleep 1
rss_before=$(rss_kib "$daemon")
anon_before=$(anon_kib "$daemon")
calls_before=$(assume_role_calls)

# users_ask FIRST LAST: one request per user from ar-bench-FIRST to ar-bench-LAST, 8 at a time;
# prints how many were answered 200.
users_ask() {
  seq "$1" "$2" |
    xargs -P 8 -I{} setpriv --reuid=ar-bench-{} --regid=ar-bench-{} --init-groups -- \
      curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: $token" "http://127.0.0.1:$port/roles/piyo" |
    grep -c '^200$' || true
}
half=$((USERS / 2))
say "$USERS users ask once ($half, then the rest)"
started=$(now_ms)
first_ok=$(users_ask 1 "$half")
first_ms=$(($(now_ms) - started))
sleep 1
rss_half=$(rss_kib "$daemon")
anon_half=$(anon_kib "$daemon")
started=$(now_ms)
first_ok=$((first_ok + $(users_ask $((half + 1)) "$USERS")))
first_ms=$((first_ms + $(now_ms) - started))
calls_first=$(($(assume_role_calls) - calls_before))
sleep 1
rss_after=$(rss_kib "$daemon")
anon_after=$(anon_kib "$daemon")
say "$USERS users ask again"
second_ok=$(users_ask 1 "$USERS")
calls_second=$(($(assume_role_calls) - calls_before - calls_first))
live=$(curl -s -H "Authorization: $token" "http://127.0.0.1:$port/metrics" |
  sed -n 's/^assume_roled_user_sessions{role="piyo"} //p')
# per_session BEFORE AFTER USERS: KiB per user.
per_session() { awk -v b="$1" -v a="$2" -v n="$3" 'BEGIN { printf "%.1f", (a - b) / n }'; }
echo "first round: $first_ok/$USERS answered, $calls_first AssumeRole in ${first_ms} ms; second: $second_ok answered, $calls_second more; $live live; RSS $rss_before -> $rss_half -> $rss_after KiB, anonymous $anon_before -> $anon_half -> $anon_after KiB" >&2

{
  printf '\n## %s: sessions per user\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
  printf 'Machine: %s cores, %s GiB; Linux %s. assume-roled %s (release), defaults (peer lookup and audit on).\n\n' \
    "$(nproc)" "$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$(uname -r)" "$("$BIN" --version | cut -d' ' -f2)"
  printf '| measure | result | target |\n|---|---|---|\n'
  printf '| %s distinct users, one request each: answered 200 | %s | all |\n' "$USERS" "$first_ok"
  printf '| AssumeRole calls for them | %s | exactly %s |\n' "$calls_first" "$USERS"
  printf '| the same users again: answered 200, more AssumeRole calls | %s, %s | all, 0 |\n' "$second_ok" "$calls_second"
  printf '| live sessions (assume_roled_user_sessions) | %s | %s |\n' "$live" "$USERS"
  printf '| resident memory per live session: one more session (the second %s users) | %s KiB (%s → %s MiB) | ≤ 4 KiB |\n' "$((USERS - half))" \
    "$(per_session "$rss_half" "$rss_after" $((USERS - half)))" "$(mib "$rss_half")" "$(mib "$rss_after")"
  printf '| of which the daemon'"'"'s own (anonymous) | %s KiB (%s → %s MiB) | - |\n' \
    "$(per_session "$anon_half" "$anon_after" $((USERS - half)))" "$(mib "$anon_half")" "$(mib "$anon_after")"
  printf '| resident memory added by all %s sessions, per session (first-use costs included) | %s KiB (%s → %s MiB) | - |\n' "$USERS" \
    "$(per_session "$rss_before" "$rss_after" "$USERS")" "$(mib "$rss_before")" "$(mib "$rss_after")"
  printf '| of which the daemon'"'"'s own (anonymous) | %s KiB (%s → %s MiB) | - |\n' \
    "$(per_session "$anon_before" "$anon_after" "$USERS")" "$(mib "$anon_before")" "$(mib "$anon_after")"
} | tee -a "$RESULTS"
[ "$first_ok" = "$USERS" ] && [ "$calls_first" = "$USERS" ] && [ "$calls_second" = 0 ]
