#!/usr/bin/env bash
# The installed service under a real systemd. Boots Debian 12 in systemd-nspawn, sharing the
# host's network so that moto and an instance-metadata double on the host's loopback are
# reachable from inside, installs the .deb (packaging/build.sh, around the debug binary), and
# checks what only systemd can show: the package makes the user and enables the units; the unit is active only once credentials exist; reload adds a role without
# re-fetching the old one and survives a typo; a crash is restarted, a hung process is killed by
# the watchdog, a bad configuration at start fails without a restart loop; the hardening is in
# force; the profile snippet serves members of the group only, and a role's own token file is
# given to that role's group (through SupplementaryGroups=); the socket unit holds the port from
# boot and across restarts, which no client notices; the metadata guard is installed by
# ExecStartPre and outlives a stop; stop exits 0; an edited configuration survives an upgrade
# and a removal, and purge deletes it.
#
# Run by `make systemd-test` (as root; needs systemd-nspawn and debootstrap). The debootstrapped
# root file system is cached in target/systemd-rootfs; each run works on a fresh copy. Its
# Debian mirror is the one this machine's own apt sources name (MIRROR overrides it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$ROOT/.venv
BIN=${BIN:-$ROOT/target/debug/assume-roled}
ROOTFS_CACHE=${ROOTFS_CACHE:-$ROOT/target/systemd-rootfs}
# The first Debian archive among the machine's apt sources (one-line and deb822 formats), not
# its security or updates archive; on a host whose sources name no Debian archive (Ubuntu's
# cannot debootstrap Debian 12), MIRROR must be given.
apt_mirror() {
  local sources=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  { cat "${sources[@]}" 2>/dev/null || true; } |
    grep -Eo '^(deb +(\[[^]]*\] +)?|URIs: *)[a-z]+://[^ ]+' | grep -Eo '[a-z]+://[^ ]+' |
    grep '/debian/*$' | grep -v -e security -e updates | sed -n 1p
}
MIRROR=${MIRROR:-$(apt_mirror)}
UNIT=assume-roled

work=$(mktemp -d /var/tmp/assume-roled-systemd.XXXXXX)
pids=()
nspawn_pid=""
leader=""
checks=0
guard_installed=""

cleanup() {
  if [ -n "$leader" ]; then inside systemctl poweroff >/dev/null 2>&1 || true; fi
  if [ -n "$nspawn_pid" ]; then
    for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # The container shares the host's network, so the guard's table is the host's: never leave
  # the one this test installed (and never touch one it did not).
  if [ -n "$guard_installed" ]; then nft delete table inet assume_roled 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf 'ok %d: %s\n' "$checks" "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*" >&2
  if [ -n "$leader" ]; then
    printf -- '--- journal of %s ---\n' "$UNIT" >&2
    journal | tail -n 40 >&2 || true
  fi
  exit 1
}
free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_until SECONDS COMMAND...: polls every 0.2 s.
wait_until() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
inside() { nsenter --target "$leader" --mount --uts --ipc --pid -- "$@"; }
journal() { inside journalctl -u "$UNIT" --no-pager -o cat; }
# grep reads to the end (no -q): an early exit would kill journalctl with SIGPIPE, which
# pipefail turns into "not found" on a long journal.
journal_has() { journal | grep -- "$1" >/dev/null; }
property() { inside systemctl show -p "$1" --value "$UNIT"; }
is_state() { [ "$(inside systemctl is-active "$UNIT" || true)" = "$1" ]; }
token() { cat "$root/var/lib/assume-roled/token"; }
fetch() { curl -s -o "$work/answer" -w '%{http_code}' -H "Authorization: $(token)" "http://127.0.0.1:$listen_port/roles/$1"; }
write_config() {
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\npeer_lookup = true\n' "$listen_port"
    printf '[sts]\nregion = "us-east-1"\nendpoint = "http://127.0.0.1:%s"\n' "$gate_port"
    for name in "$@"; do
      printf '[[roles]]\nname = "%s"\narn = "arn:aws:iam::444455556666:role/piyo-role"\nsession_name = "hoge"\n' "$name"
    done
  } >"$root/etc/assume-roled/config.toml"
}

[ "$(id -u)" = 0 ] || fail "needs root (systemd-nspawn)"
[ -n "$MIRROR" ] || fail "no Debian mirror in /etc/apt/sources*: set MIRROR"
for tool in systemd-nspawn debootstrap nsenter curl; do
  command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install systemd-container debootstrap util-linux curl"
done
[ -x "$BIN" ] || fail "$BIN is missing: run cargo build"
[ -x "$VENV/bin/moto_server" ] || fail "$VENV is missing: run make venv"

# A cache made before nftables was in the list is made again.
if [ ! -e "$ROOTFS_CACHE/.complete" ] || [ ! -x "$ROOTFS_CACHE/usr/sbin/nft" ]; then
  say "debootstrapping Debian 12 into $ROOTFS_CACHE (once)"
  rm -rf "$ROOTFS_CACHE"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,nftables \
    bookworm "$ROOTFS_CACHE" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  touch "$ROOTFS_CACHE/.complete"
fi
root=$work/root
cp -a "$ROOTFS_CACHE" "$root"

say "AWS stand-ins on the host's loopback"
moto_port=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_until 20 curl -sf "http://127.0.0.1:$moto_port/moto-api/" || fail "moto did not start"
host_credentials=$("$VENV/bin/python" "$ROOT/tests/support/bootstrap.py" "http://127.0.0.1:$moto_port")
"$VENV/bin/python" "$ROOT/tests/support/imds_double.py" "$host_credentials" >"$work/imds.port" 2>"$work/imds.log" &
pids+=($!)
wait_until 20 test -s "$work/imds.port" || fail "the metadata double did not start"
imds_port=$(head -n 1 "$work/imds.port")
# STS as the daemon sees it: a gate in front of moto, closed until the test opens it.
gate_port=$(free_port)
listen_port=$(free_port)

say "installing the .deb"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
# build_deb VERSION: the package around $BIN, in the container's /var/tmp; prints its path there.
build_deb() {
  ONLY=deb BIN="$BIN" VERSION="$1" OUT="$work/package" "$ROOT/packaging/build.sh" >/dev/null
  cp "$work/package/assume-roled_$1_$(dpkg --print-architecture).deb" "$root/var/tmp/"
  echo "/var/tmp/assume-roled_$1_$(dpkg --print-architecture).deb"
}
deb=$(build_deb "$version")
systemd-nspawn --directory="$root" --register=no --keep-unit --quiet --pipe dpkg -i "$deb" >"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log"; fail "dpkg -i failed"; }
[ -f "$root/etc/assume-roled/config.toml" ] || fail "the package did not install a configuration"
grep -q '^assume-roled:' "$root/etc/passwd" && grep -q '^assume-roled:' "$root/etc/group" ||
  fail "the package did not make the user and group"
ok "the .deb installs: user and group assume-roled, /etc/assume-roled/config.toml"
write_config piyo
mkdir -p "$root/etc/systemd/system/$UNIT.service.d"
cat >"$root/etc/systemd/system/$UNIT.service.d/test.conf" <<EOF
[Service]
# The host's instance profile, as the instance-metadata double vends it.
Environment=AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:$imds_port/
# A short watchdog, so that the test can watch it fire.
WatchdogSec=4
EOF

# The socket unit at the test's port (the package enabled it).
mkdir -p "$root/etc/systemd/system/$UNIT.socket.d"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\nListenStream=[::1]:%s\n' \
  "$listen_port" "$listen_port" >"$root/etc/systemd/system/$UNIT.socket.d/test.conf"
# Whether an unprivileged user of the host can bind ADDRESS PORT.
can_bind() {
  setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 -c \
    'import socket, sys; s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.bind((sys.argv[1], int(sys.argv[2])))' \
    "$1" "$2" 2>/dev/null
}

say "booting systemd in a container"
# CAP_NET_ADMIN: the unit's ExecStartPre installs the metadata guard's nftables table (in the
# host's network namespace, which the container shares; the cleanup removes it).
systemd-nspawn --directory="$root" --boot --register=no --keep-unit --console=pipe --quiet \
  --capability=CAP_NET_ADMIN \
  >"$work/boot.log" 2>&1 &
nspawn_pid=$!
wait_until 30 pgrep -P "$nspawn_pid" || fail "the container did not start"
leader=$(pgrep -P "$nspawn_pid" | head -n 1)
booted() { case "$(inside systemctl is-system-running 2>/dev/null)" in running | degraded) return 0 ;; esac; return 1; }
wait_until 60 booted || fail "the container did not finish booting"
ok "systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2) booted"

say "the socket unit holds the port"
[ "$(inside systemctl is-active "$UNIT.socket")" = active ] ||
  fail "the socket unit is $(inside systemctl is-active "$UNIT.socket")"
[ "$(inside systemctl is-enabled "$UNIT.socket")" = enabled ] || fail "the socket unit is not enabled"
# The starter configuration names an example role: the operator enables the service.
[ "$(inside systemctl is-enabled "$UNIT.service" || true)" = disabled ] ||
  fail "the package enabled the service"
is_state inactive || fail "the service is $(inside systemctl is-active "$UNIT") before anyone started it"
! can_bind 127.0.0.1 "$listen_port" && ! can_bind ::1 "$listen_port" ||
  fail "another user could bind the port before the service started"
ok "from boot, systemd holds 127.0.0.1:$listen_port and [::1]:$listen_port; no other user can bind them; the package enabled the socket, not the service"

say "readiness follows credentials"
# What the README asks of the operator once the configuration names the real role.
inside systemctl enable --now --no-block "$UNIT" >/dev/null 2>&1
wait_until 30 journal_has "refresh failed" || fail "the daemon did not try STS"
is_state activating || fail "the unit is $(inside systemctl is-active $UNIT) before it has credentials"
status_is() { [[ "$(property StatusText)" == $1 ]]; }
wait_until 10 status_is "waiting for STS: piyo: Unreachable" || fail "status: $(property StatusText)"
ok "activating while STS is unreachable, status: $(property StatusText)"
"$VENV/bin/python" "$ROOT/tests/support/gate.py" "$gate_port" "$moto_port" >/dev/null 2>&1 &
pids+=($!)
wait_until 60 is_state active || fail "the unit did not become active once STS answered"
wait_until 10 status_is "serving 1 role, credentials valid until *" || fail "status: $(property StatusText)"
ok "active once credentials exist, status: $(property StatusText)"
[ "$(fetch piyo)" = 200 ] && grep -q '"AccessKeyId":"ASIA' "$work/answer" || fail "no credentials served"
journal_has "source identity arn=arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/" ||
  fail "the source identity is not the instance profile's"
ok "serves credentials, as the instance profile's role"

say "token file and hardening"
[ "$(inside stat -c '%a %U %G' /var/lib/assume-roled/token)" = "640 assume-roled assume-roled" ] ||
  fail "token file: $(inside stat -c '%a %U %G' /var/lib/assume-roled/token)"
[ "$(tail -c 1 "$root/var/lib/assume-roled/token" | od -An -c | tr -d ' ')" != '\n' ] || fail "trailing newline"
ok "token file is 0640 assume-roled:assume-roled, no trailing newline"
[ "$(inside stat -c '%a %U %G' /etc/assume-roled/config.toml)" = "640 root assume-roled" ] ||
  fail "configuration: $(inside stat -c '%a %U %G' /etc/assume-roled/config.toml)"
[ "$(inside stat -c '%a' /var/lib/assume-roled/endpoints)" = 644 ] ||
  fail "public copy of the endpoints: $(inside stat -c '%a' /var/lib/assume-roled/endpoints)"
ok "the configuration is 0640 root:assume-roled (tmpfiles.d); the endpoints env needs are public"
pid=$(property MainPID)
owner=$(inside stat -c %U "/proc/$pid")
[ "$owner" = assume-roled ] || fail "runs as $owner"
status=$(inside cat "/proc/$pid/status")
for field in CapInh CapPrm CapEff CapBnd CapAmb; do
  grep -q "^$field:[[:space:]]*0000000000000000$" <<<"$status" || fail "$(grep "^$field" <<<"$status")"
done
grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$status" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2$' <<<"$status" || fail "no system call filter"
ok "runs as assume-roled with no capabilities, no new privileges, a system call filter"

say "profile snippet"
inside useradd --create-home --shell /bin/bash --groups assume-roled member
inside useradd --create-home outsider
member_uri=$(inside su - member -c 'printf %s "$AWS_CONTAINER_CREDENTIALS_FULL_URI"')
[ "$member_uri" = "http://127.0.0.1:$listen_port/roles/piyo" ] || fail "member got '$member_uri'"
member_token=$(inside su - member -c 'cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"')
[ "$member_token" = "$(token)" ] || fail "member cannot read the token"
outsider_env=$(inside su - outsider -c 'env' | grep '^AWS_CONTAINER' || true)
[ -z "$outsider_env" ] || fail "outsider got: $outsider_env; $(inside stat -c '%a %U %G' /var/lib/assume-roled); $(inside su - outsider -c 'id; assume-roled env; echo rc=$?' 2>&1)"
inside su - outsider -c 'cat /var/lib/assume-roled/token' >/dev/null 2>&1 && fail "outsider can read the token"
ok "a member of group assume-roled gets the variables and the token; an outsider gets neither"
# The token file is the daemon's (assume-roled:assume-roled): root and members of its group
# read it as clients do; only the daemon insists on owning it.
root_status=$(inside assume-roled status 2>&1) || fail "status as root: $root_status"
grep -q '^piyo  fresh  arn:aws:iam::444455556666:role/piyo-role$' <<<"$root_status" ||
  fail "status as root: $root_status"
member_status=$(inside su - member -c 'assume-roled status' 2>&1) || fail "status as member: $member_status"
[ "$member_status" = "$root_status" ] || fail "status as member: $member_status"
inside su - outsider -c 'assume-roled status' >/dev/null 2>&1 && fail "an outsider ran status"
ok "assume-roled status works as root and as a member of the token's group, not as an outsider"
# A request from the member's own shell (bash's /dev/tcp): the audit line names that user,
# which needs the kernel's socket table to be readable and not remapped by the hardening.
inside su - member -c "exec 3<>/dev/tcp/127.0.0.1/$listen_port
  printf 'GET /roles/piyo HTTP/1.1\r\nHost: 127.0.0.1:$listen_port\r\nAuthorization: %s\r\nConnection: close\r\n\r\n' \"\$(cat /var/lib/assume-roled/token)\" >&3
  cat <&3" >"$work/member-answer" || true
grep -q '"AccessKeyId":"ASIA' "$work/member-answer" || fail "the member's request was not served: $(head -c 300 "$work/member-answer")"
member_uid=$(inside id -u member)
wait_until 10 journal_has "audit: credentials served role=piyo access_key_id=ASIA.* uid=$member_uid user=member" ||
  fail "no audit line naming the member: $(journal | grep audit | tail -n 2)"
journal_has "sock_diag is unavailable" && fail "the unit does not let the daemon ask the kernel (sock_diag)"
ok "under the hardened unit, the audit line names the connecting user (uid $member_uid), from sock_diag"

say "a role's own token file, given to its group"
inside groupadd team
inside useradd --create-home --shell /bin/bash --groups team teammate
cat >"$root/etc/systemd/system/$UNIT.service.d/team.conf" <<EOF
[Service]
# The daemon gives the role's token file to group team, so it must be a member.
SupplementaryGroups=team
EOF
write_config piyo
printf '[[roles]]\nname = "team"\narn = "arn:aws:iam::444455556666:role/piyo-role"\ntoken_file = "/var/lib/assume-roled/team.token"\ngroup = "team"\n' \
  >>"$root/etc/assume-roled/config.toml"
inside systemctl daemon-reload
inside systemctl restart "$UNIT" || fail "did not start with a role token file: $(journal | tail -n 5)"
[ "$(inside stat -c '%a %U %G' /var/lib/assume-roled/team.token)" = "640 assume-roled team" ] ||
  fail "team token file: $(inside stat -c '%a %U %G' /var/lib/assume-roled/team.token)"
ok "the role's token file is 0640 assume-roled:team, given by the daemon's supplementary group"
teammate_uri=$(inside su - teammate -c 'printf %s "$AWS_CONTAINER_CREDENTIALS_FULL_URI"')
[ "$teammate_uri" = "http://127.0.0.1:$listen_port/roles/team" ] || fail "teammate got '$teammate_uri'"
inside su - teammate -c "exec 3<>/dev/tcp/127.0.0.1/$listen_port
  printf 'GET /roles/team HTTP/1.1\r\nHost: 127.0.0.1:$listen_port\r\nAuthorization: %s\r\nConnection: close\r\n\r\n' \"\$(cat \"\$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" >&3
  cat <&3" >"$work/teammate-answer" || true
grep -q '"AccessKeyId":"ASIA' "$work/teammate-answer" || fail "the teammate was not served: $(head -c 300 "$work/teammate-answer")"
member_uri=$(inside su - member -c 'printf %s "$AWS_CONTAINER_CREDENTIALS_FULL_URI"')
[ "$member_uri" = "http://127.0.0.1:$listen_port/roles/piyo" ] || fail "member got '$member_uri'"
inside su - member -c 'cat /var/lib/assume-roled/team.token' >/dev/null 2>&1 && fail "a non-member can read the team token"
[ "$(fetch team)" = 401 ] || fail "the server's token opened the team role"
ok "the same profile line gives each group its role (the team's from the public copy); the team token is the team's alone"

say "reload"
refreshed_piyo() { journal | grep -c "credentials refreshed role=piyo access_key_id" || true; }
before=$(refreshed_piyo)
write_config piyo piyo2
inside systemctl reload "$UNIT" || fail "systemctl reload failed"
wait_until 20 journal_has "credentials refreshed role=piyo2" || fail "the new role was not fetched"
[ "$(fetch piyo2)" = 200 ] || fail "the new role is not served"
[ "$(refreshed_piyo)" = "$before" ] || fail "reload re-fetched the unchanged role"
journal_has 'configuration reloaded kept=\["piyo"\] started=\["piyo2"\]' || fail "no reload summary"
ok "reload serves a new role without re-fetching the old one"
echo 'this is = = not TOML' >>"$root/etc/assume-roled/config.toml"
inside systemctl reload "$UNIT" || fail "systemctl reload failed"
wait_until 20 journal_has "reload failed" || fail "the bad configuration was not reported"
is_state active || fail "a typo took the service down"
[ "$(fetch piyo2)" = 200 ] || fail "a typo changed what is served"
ok "a typo on reload is logged and the running configuration kept"
write_config piyo
inside systemctl reload "$UNIT" || fail "systemctl reload failed"

say "restarts no client notices"
: >"$work/answers"
(
  end=$(($(date +%s) + 120))
  while [ ! -e "$work/stop-loop" ] && [ "$(date +%s)" -lt "$end" ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: $(token)" \
      "http://127.0.0.1:$listen_port/roles/piyo") || code="curl-exit-$?"
    echo "$code" >>"$work/answers"
    sleep 0.05
  done
) &
client_pid=$!
(
  while [ ! -e "$work/stop-loop" ]; do
    if can_bind 127.0.0.1 "$listen_port" || can_bind ::1 "$listen_port"; then echo bound >>"$work/bound"; fi
    sleep 0.05
  done
) &
binder_pid=$!
for _ in 1 2 3; do
  inside systemctl restart "$UNIT" || fail "restart failed: $(journal | tail -n 5)"
  sleep 1
done
touch "$work/stop-loop"
wait "$client_pid" "$binder_pid"
total=$(wc -l <"$work/answers")
others=$(grep -vc '^200$' "$work/answers" || true)
[ "$total" -gt 20 ] || fail "only $total requests were made during the restarts"
[ "$others" = 0 ] || fail "$others of $total answers were not 200: $(sort "$work/answers" | uniq -c | tr '\n' ' ')"
[ ! -e "$work/bound" ] || fail "another user bound the port during a restart"
ok "through three restarts, $total requests on new connections: all 200, none refused; no other user could bind the port"

say "restarts"
pid=$(property MainPID)
inside sh -c "kill -KILL $pid"
restarted() { is_state active && [ "$(property MainPID)" != "$pid" ] && [ "$(property MainPID)" != 0 ]; }
wait_until 30 restarted || fail "a killed daemon was not restarted"
ok "killed with SIGKILL, restarted by systemd (restarts: $(property NRestarts))"
pid=$(property MainPID)
inside sh -c "kill -STOP $pid"
wait_until 30 restarted || fail "a hung daemon was not restarted by the watchdog"
watchdog_logged() { inside journalctl --no-pager -o cat | grep "$UNIT.service: Watchdog timeout" >/dev/null; }
wait_until 10 watchdog_logged || fail "no watchdog timeout logged"
ok "a stopped (hung) daemon missed its watchdog pings and was restarted"

say "bad configuration at start"
echo 'listen = "0.0.0.0:1"' >"$root/etc/assume-roled/config.toml"
inside systemctl restart "$UNIT" >/dev/null 2>&1 && fail "a bad configuration started"
wait_until 10 is_state failed || fail "the unit is $(inside systemctl is-active $UNIT)"
[ "$(property ExecMainStatus)" = 78 ] || fail "exit status $(property ExecMainStatus)"
sleep 5
# A manual restart resets NRestarts; any automatic restart after it would count.
is_state failed && [ "$(property NRestarts)" = 0 ] ||
  fail "the bad configuration is being restarted: $(inside systemctl is-active $UNIT), restarts $(property NRestarts)"
journal_has "config.toml:1: listen: unknown key" || fail "the error does not name the file, line and key"
ok "a bad configuration at start leaves the unit failed (status 78), not restarting"

say "metadata guard"
member_uid=$(inside id -u member)
daemon_uid=$(inside id -u assume-roled)
write_config piyo
printf 'allowed_users = ["member"]\n[imds]\nrole = "piyo"\nguard = "redirect"\nexempt_users = ["member"]\n' \
  >>"$root/etc/assume-roled/config.toml"
! nft list table inet assume_roled >/dev/null 2>&1 || fail "a guard table was there before the test"
inside systemctl reset-failed "$UNIT"
guard_installed=1
inside systemctl start "$UNIT"
is_state active || fail "did not start with the guard configured"
# The container shares the host's network: its nftables are the host's.
rules=$(nft list table inet assume_roled) || fail "ExecStartPre did not install the guard's table"
grep -q "ip daddr 169.254.169.254 tcp dport 80 redirect to :$listen_port" <<<"$rules" ||
  fail "no redirect to the listener: $rules"
exempt=$(grep -m 1 'meta skuid' <<<"$rules")
for uid in 0 "$daemon_uid" "$member_uid"; do
  grep -Eq "[{ ]$uid[ ,}]" <<<"$exempt" || fail "uid $uid is not exempt: $exempt"
done
ok "ExecStartPre installed the guard as root: metadata redirected to the listener; root, the daemon's user ($daemon_uid) and the exempt user ($member_uid) keep it"
inside systemctl stop "$UNIT"
nft list table inet assume_roled >/dev/null 2>&1 || fail "the guard went away with the daemon"
ok "the guard stays when the daemon stops (redirected connections are refused, not passed on)"

say "stop"
write_config piyo
inside systemctl start "$UNIT"
is_state active || fail "did not start again"
sigterms() { journal | grep -c 'stopping signal="SIGTERM"' || true; }
before=$(sigterms)
inside systemctl stop "$UNIT"
[ "$(property Result)" = success ] && [ "$(property ExecMainStatus)" = 0 ] ||
  fail "stop: result $(property Result), status $(property ExecMainStatus)"
one_more_sigterm() { [ "$(sigterms)" -gt "$before" ]; }
wait_until 10 one_more_sigterm || fail "SIGTERM was not logged"
ok "systemctl stop drains and exits 0"

say "package: upgrade, removal, purge"
echo '# kept: edited by the operator' >>"$root/etc/assume-roled/config.toml"
inside systemctl start "$UNIT"
before_pid=$(property MainPID)
newer=$(build_deb "$version+1")
inside dpkg -i "$newer" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "the upgrade failed"; }
[ "$(inside dpkg-query -W -f '${Version}' assume-roled)" = "$version+1" ] || fail "not upgraded"
grep -q '^# kept: edited by the operator$' "$root/etc/assume-roled/config.toml" ||
  fail "the upgrade replaced the edited configuration"
wait_until 30 is_state active || fail "the service is $(inside systemctl is-active $UNIT) after the upgrade"
[ "$(property MainPID)" != "$before_pid" ] || fail "the running service was not restarted on the new binary"
ok "an upgrade keeps the edited configuration and restarts the running service"
inside dpkg -r assume-roled >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "removal failed"; }
[ ! -e "$root/usr/bin/assume-roled" ] || fail "the binary is still there"
is_state inactive || fail "the service is $(inside systemctl is-active $UNIT) after removal"
[ "$(inside systemctl is-active "$UNIT.socket" || true)" = inactive ] || fail "the socket is still held"
grep -q '^# kept: edited by the operator$' "$root/etc/assume-roled/config.toml" ||
  fail "removal lost the edited configuration"
ok "removal stops the service and the socket and keeps the configuration"
inside dpkg -P assume-roled >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "purge failed"; }
[ ! -e "$root/etc/assume-roled" ] && [ ! -e "$root/var/lib/assume-roled" ] ||
  fail "purge left $(ls -d "$root/etc/assume-roled" "$root/var/lib/assume-roled" 2>/dev/null)"
ok "purge deletes the configuration and the state directory"

say "all $checks systemd checks passed"
