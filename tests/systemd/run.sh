#!/usr/bin/env bash
# The installed service under a real systemd. Boots Debian 12 in systemd-nspawn inside a network
# namespace of the test's own (the container shares it: moto and the instance-metadata doubles
# on its loopback and at 169.254.169.254 are reachable from inside, and its nftables are the
# namespace's, never this machine's), installs the .deb (packaging/build.sh, around the debug
# binary), and checks what only systemd can show: the package makes the user and enables the
# socket and the guard's watch; the guard's table is in place before network-pre.target with
# the service disabled, is back within a second after every nftables reload and flush, and
# fails closed on a broken configuration; the service is ready once its first STS attempt
# ended, so a boot with STS unreachable is not held; reload adds a role without re-fetching
# the old one and survives a typo; a crash is restarted, a hung process is killed by the
# watchdog, a bad configuration at start fails without a restart loop; the hardening is in
# force; the profile snippet serves members of the group only, and a role's own token file is
# given to that role's group (through SupplementaryGroups=); the socket unit holds the port
# from boot and across restarts, which no client notices; status works as root and as a
# member; stop exits 0; an edited configuration survives an upgrade and a removal, and purge
# deletes it.
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

[ "$(id -u)" = 0 ] || { echo "needs root (systemd-nspawn)" >&2; exit 1; }
# The host of the test is a network namespace of its own: the container shares its network (so
# moto and the metadata doubles on its loopback are reachable from inside, and the container's
# nftables are the namespace's, never this machine's), with the instance metadata address on
# its loopback. The root file system is made first, while the package mirror is reachable.
if [ -z "${ASSUME_ROLED_SYSTEMD_NETNS:-}" ]; then
  [ -n "$MIRROR" ] || { echo "no Debian mirror in /etc/apt/sources*: set MIRROR" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  # A cache made before nftables and rpm were in the list is made again.
  if [ ! -e "$ROOTFS_CACHE/.complete" ] || [ ! -x "$ROOTFS_CACHE/usr/sbin/nft" ] || [ ! -x "$ROOTFS_CACHE/usr/bin/rpm" ]; then
    printf '\n== debootstrapping Debian 12 into %s (once)\n' "$ROOTFS_CACHE"
    rm -rf "$ROOTFS_CACHE"
    log=$(mktemp)
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,nftables,rpm \
      bookworm "$ROOTFS_CACHE" "$MIRROR" >"$log" 2>&1 ||
      { tail -n 20 "$log"; echo "debootstrap failed" >&2; exit 1; }
    rm -f "$log"
    touch "$ROOTFS_CACHE/.complete"
  fi
  netns=ar-systemd-$$
  ip netns add "$netns"
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add 169.254.169.254/32 dev lo
  status=0
  # nsenter, not `ip netns exec`: that one also remounts /sys, and with it the cgroup file
  # system systemd-nspawn needs.
  ASSUME_ROLED_SYSTEMD_NETNS=$netns nsenter --net="/run/netns/$netns" "$0" "$@" || status=$?
  ip netns delete "$netns"
  exit "$status"
fi

work=$(mktemp -d /var/tmp/assume-roled-systemd.XXXXXX)
pids=()
nspawn_pid=""
leader=""
checks=0

cleanup() {
  if [ -n "$leader" ]; then inside systemctl poweroff >/dev/null 2>&1 || true; fi
  if [ -n "$nspawn_pid" ]; then
    for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
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

for tool in systemd-nspawn debootstrap nsenter curl; do
  command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install systemd-container debootstrap util-linux curl"
done
[ -x "$BIN" ] || fail "$BIN is missing: run cargo build"
[ -x "$VENV/bin/moto_server" ] || fail "$VENV is missing: run make venv"

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
# The test users exist before the first boot (a member of group assume-roled, and another).
systemd-nspawn --directory="$root" --register=no --keep-unit --quiet --pipe sh -c \
  'useradd --create-home --shell /bin/bash --groups assume-roled member &&
   useradd --create-home --shell /bin/bash outsider' >>"$work/dpkg.log" 2>&1 ||
  { cat "$work/dpkg.log"; fail "useradd failed"; }
# The metadata guard is configured from the first boot on.
guard_lines() { printf 'allowed_users = ["root", "member"]\n[imds]\nrole = "piyo"\nguard = "redirect"\n'; }
write_config piyo
guard_lines >>"$root/etc/assume-roled/config.toml"
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

# open_gate: STS reachable from now on (the gate in front of moto listens; kill $gate_pid closes it).
open_gate() {
  "$VENV/bin/python" "$ROOT/tests/support/gate.py" "$gate_port" "$moto_port" >/dev/null 2>&1 &
  gate_pid=$!
  pids+=($gate_pid)
}
booted() { case "$(inside systemctl is-system-running 2>/dev/null)" in running | degraded) return 0 ;; esac; return 1; }
# boot: starts the container's systemd and waits until it finished booting.
# CAP_NET_ADMIN: the guard's unit and the daemon's ExecStartPre install the metadata guard's
# nftables table (in the test host's network namespace, which the container shares).
boot() {
  systemd-nspawn --directory="$root" --boot --register=no --keep-unit --console=pipe --quiet \
    --capability=CAP_NET_ADMIN \
    >>"$work/boot.log" 2>&1 &
  nspawn_pid=$!
  wait_until 30 pgrep -P "$nspawn_pid" || fail "the container did not start"
  leader=$(pgrep -P "$nspawn_pid" | head -n 1)
  wait_until 90 booted || fail "the container did not finish booting: $(inside systemctl list-jobs 2>&1 | head)"
}
# poweroff: shuts the container down and waits for it.
poweroff() {
  inside systemctl poweroff >/dev/null 2>&1 || true
  for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
  ! kill -0 "$nspawn_pid" 2>/dev/null || fail "the container did not power off"
  wait "$nspawn_pid" 2>/dev/null || true
  nspawn_pid="" leader=""
}
# monotonic UNIT PROPERTY: a unit's (or, without a unit, the manager's) monotonic timestamp, µs.
monotonic() { inside systemctl show -p "$2" --value ${1:+"$1"}; }
# instance_keys_as USER: the AccessKeyId lines USER reads from the instance metadata address as
# the instance role's credentials (IMDSv2, with bash's /dev/tcp); nothing if refused or if the
# daemon answered instead (it serves no hoge-ec2-role).
instance_keys_as() {
  inside su -s /bin/bash - "$1" -c 'exec 3<>/dev/tcp/169.254.169.254/80 || exit 0
    printf "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n" >&3
    token=$(cat <&3 | tail -n 1)
    exec 4<>/dev/tcp/169.254.169.254/80 || exit 0
    printf "GET /latest/meta-data/iam/security-credentials/hoge-ec2-role HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: %s\r\nConnection: close\r\n\r\n" "$token" >&4
    cat <&4' 2>/dev/null | grep AccessKeyId || true
}
# guard_back_ms: waits for the guard's table (at most 5 s) and prints how long it took, in ms.
guard_back_ms() {
  local started now
  started=$(date +%s%N)
  until nft list table inet assume_roled >/dev/null 2>&1; do
    now=$(date +%s%N)
    [ $(((now - started) / 1000000)) -lt 5000 ] || break
    sleep 0.002
  done
  echo $((($(date +%s%N) - started) / 1000000))
}
# median_and_worst: of the numbers on stdin.
median_and_worst() { sort -n | awk '{ v[NR] = $1 } END { printf "median %d ms, worst %d ms", v[int((NR + 1) / 2)], v[NR] }'; }
worst_of() { sort -n | tail -n 1; }

say "booting systemd in a container"
# The metadata double the guard stands in front of, at the instance metadata address.
"$VENV/bin/python" "$ROOT/tests/support/imds_double.py" "$host_credentials" 169.254.169.254:80 \
  >"$work/imds80.port" 2>"$work/imds80.log" &
pids+=($!)
wait_until 20 test -s "$work/imds80.port" || fail "the metadata double on 169.254.169.254:80 did not start"
boot
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

say "the metadata guard from boot, the service disabled"
[ "$(inside systemctl is-enabled assume-roled-guard.service)" = enabled ] || fail "the package did not enable the guard's unit"
[ "$(inside systemctl is-active assume-roled-guard.service)" = active ] || fail "the guard's unit is $(inside systemctl is-active assume-roled-guard.service)"
guard_ready=$(monotonic assume-roled-guard.service ActiveEnterTimestampMonotonic)
network_pre=$(monotonic network-pre.target ActiveEnterTimestampMonotonic)
[ "$guard_ready" -gt 0 ] && [ "$network_pre" -ge "$guard_ready" ] ||
  fail "the guard was ready at $guard_ready µs, network-pre.target at $network_pre µs"
rules=$(nft list table inet assume_roled) || fail "no guard table after boot"
grep -q "dnat ip to 127.0.0.1:$listen_port" <<<"$rules" || fail "the boot's table: $rules"
[ -n "$(instance_keys_as root)" ] || fail "root cannot read the instance metadata (the double is not there?)"
[ -z "$(instance_keys_as outsider)" ] || fail "a test user read the instance role's keys"
ok "the guard's table is in place from boot, with the service disabled: the watch was ready $((network_pre - guard_ready)) µs before network-pre.target was reached; a test user gets no instance keys, root does"
# The test user's redirected request started the daemon through the socket: stopped again.
inside systemctl stop "$UNIT"

say "readiness does not wait for STS"
# What the README asks of the operator once the configuration names the real role. `start`
# returns at READY=1: once the first STS attempt has ended, here with an error.
inside systemctl enable "$UNIT" >/dev/null 2>&1
started=$(date +%s%N)
inside systemctl start "$UNIT" || fail "start failed while STS is unreachable: $(journal | tail -n 5)"
start_ms=$((($(date +%s%N) - started) / 1000000))
is_state active || fail "the unit is $(inside systemctl is-active $UNIT)"
journal_has "refresh failed" || fail "the daemon did not try STS"
status_is() { [[ "$(property StatusText)" == $1 ]]; }
wait_until 10 status_is "waiting for STS: piyo: Unreachable" || fail "status: $(property StatusText)"
[ "$(fetch piyo)" = 503 ] && grep -q Unreachable "$work/answer" || fail "before credentials: $(cat "$work/answer")"
ok "active ${start_ms} ms after start while STS is unreachable (READY=1 once the first attempt ended); a client gets 503 naming the cause; status: $(property StatusText)"
open_gate
wait_until 60 status_is "serving 1 role, credentials valid until *" || fail "status: $(property StatusText)"
ok "credentials once STS answers, status: $(property StatusText)"
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
wait_until 10 journal_has "audit: credentials served role=piyo access_key_id=ASIA.* uid=$member_uid user=\"member\"" ||
  fail "no audit line naming the member: $(journal | grep audit | tail -n 2)"
journal_has "sock_diag is unavailable" && fail "the unit does not let the daemon ask the kernel (sock_diag)"
ok "under the hardened unit, the audit line names the connecting user (uid $member_uid), from sock_diag"
# Under journald the same line is a record with fields: the journal selects by them.
inside journalctl -u "$UNIT" --no-pager -o json OUTCOME=served ROLE=piyo USER=member >"$work/selected"
python3 - "$work/selected" "$member_uid" <<'PYEOF_J' || fail "journal fields: $(tail -c 600 "$work/selected")"
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
assert records, "journalctl OUTCOME=served ROLE=piyo USER=member selected nothing"
last = records[-1]
assert last["UID"] == sys.argv[2], last
assert last["TARGET"] == "audit" and last["PRIORITY"] == "6", last
assert last["ACCESS_KEY_ID"].startswith("ASIA") and "…" in last["ACCESS_KEY_ID"], last
assert last["MESSAGE"].startswith("audit: credentials served role=piyo"), last
assert "SecretAccessKey" not in json.dumps(records)
PYEOF_J
[ -z "$(inside journalctl -u "$UNIT" --no-pager -o json OUTCOME=served ROLE=piyo USER=outsider)" ] ||
  fail "the journal selected the member's records for another user"
ok "the journal selects the audit by field (journalctl OUTCOME=served ROLE=piyo USER=member): UID, TARGET, PRIORITY, the masked ACCESS_KEY_ID; the text line is its MESSAGE"

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
inside su - teammate -c 'assume-roled profiles --write' >"$work/profiles-out" 2>&1 ||
  fail "profiles --write: $(cat "$work/profiles-out")"
inside su - teammate -c 'assume-roled profiles --write' >"$work/profiles-again" 2>&1 || fail "profiles --write, twice"
grep 'every profile is there already' "$work/profiles-again" >/dev/null || fail "a second --write: $(cat "$work/profiles-again")"
inside cat /home/teammate/.aws/config >"$work/teammate-config"
[ "$(cat "$work/teammate-config")" = "[profile team]
credential_process = /usr/bin/assume-roled credentials --role team" ] || fail "the teammate's ~/.aws/config: $(cat "$work/teammate-config")"
[ "$(inside stat -c '%a %U' /home/teammate/.aws/config)" = "600 teammate" ] || fail "~/.aws/config is not the teammate's, 0600"
# What an SDK runs for the profile, exactly as written there.
process=$(sed -n 's/^credential_process = //p' "$work/teammate-config")
inside su - teammate -c "$process" >"$work/process-out" || fail "the profile's credential_process failed"
grep '^{"AccessKeyId":"ASIA' "$work/process-out" >/dev/null && grep '"Version":1' "$work/process-out" >/dev/null ||
  fail "credential_process printed: $(head -c 200 "$work/process-out")"
inside su - member -c "$process" >"$work/process-member" 2>&1 && fail "a non-member ran the team's credential_process"
grep 'cannot use its token file' "$work/process-member" >/dev/null || fail "the non-member was told: $(cat "$work/process-member")"
ok "the package's profiles --write gives the teammate a team profile whose credential_process (/usr/bin/assume-roled credentials, from the public copy) prints the team's set; a non-member gets an error"

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
inside systemctl reset-failed "$UNIT"
inside systemctl start "$UNIT"
is_state active || fail "did not start with the guard configured"
# The container shares the test host's network: its nftables are the namespace's.
rules=$(nft list table inet assume_roled) || fail "no guard table"
grep -q "ip daddr 169.254.169.254 tcp dport 80 dnat ip to 127.0.0.1:$listen_port" <<<"$rules" ||
  fail "no redirect to the listener: $rules"
exempt=$(grep -m 1 'meta skuid' <<<"$rules")
for uid in 0 "$daemon_uid" "$member_uid"; do
  grep -Eq "[{ ]$uid[ ,}]" <<<"$exempt" || fail "uid $uid is not exempt: $exempt"
done
ok "the guard follows the configuration (ExecStartPre, and the watch): metadata redirected to the listener; root, the daemon's user ($daemon_uid) and the exempt user ($member_uid) keep it"
inside systemctl stop "$UNIT"
nft list table inet assume_roled >/dev/null 2>&1 || fail "the guard went away with the daemon"
ok "the guard stays when the daemon stops (redirected connections are refused, not passed on)"

say "the guard is kept through firewall reloads"
inside systemctl start "$UNIT"
# Debian's stock /etc/nftables.conf begins with `flush ruleset`: each reload removes every table.
grep -q '^flush ruleset' "$root/etc/nftables.conf" || fail "the stock nftables.conf does not flush"
inside systemctl enable --now nftables >/dev/null 2>&1 || fail "nftables.service did not start"
wait_until 5 nft list table inet assume_roled || fail "the table was not put back after nftables started"
for _ in $(seq 20); do
  inside systemctl reload nftables || fail "systemctl reload nftables failed"
  guard_back_ms >>"$work/reload.ms"
done
for _ in $(seq 20); do
  nft flush ruleset
  guard_back_ms >>"$work/flush.ms"
done
[ "$(worst_of <"$work/reload.ms")" -lt 1000 ] && [ "$(worst_of <"$work/flush.ms")" -lt 1000 ] ||
  fail "the table was gone for a second or more: reloads $(tr '\n' ' ' <"$work/reload.ms"), flushes $(tr '\n' ' ' <"$work/flush.ms")"
[ -z "$(instance_keys_as outsider)" ] || fail "a test user read the instance role's keys"
put_back=$(inside journalctl -u assume-roled-guard --no-pager -o cat | grep -c 'putting it back' || true)
[ "$put_back" -ge 40 ] || fail "the watch logged $put_back put-backs"
metrics=$(curl -s -H "Authorization: $(token)" "http://127.0.0.1:$listen_port/metrics")
grep -q '^assume_roled_guard_in_place 1$' <<<"$metrics" || fail "metrics: $(grep guard <<<"$metrics")"
reapplied=$(sed -n 's/^assume_roled_guard_reapplied_total \([0-9]*\)$/\1/p' <<<"$metrics")
[ "${reapplied:-0}" -ge 40 ] || fail "metrics: $(grep guard <<<"$metrics")"
inside assume-roled status | grep -q "^metadata guard: in place, put back [0-9]* times$" ||
  fail "status: $(inside assume-roled status 2>&1 | head -n 2)"
ok "20 nftables reloads (stock nftables.conf): table back after $(median_and_worst <"$work/reload.ms"); 20 \`nft flush ruleset\`: $(median_and_worst <"$work/flush.ms"); each put back is a warning, assume_roled_guard_reapplied_total $reapplied, status says so"
echo 'this is = = not TOML' >>"$root/etc/assume-roled/config.toml"
# The daemon's reload reaches the watch (ReloadPropagatedFrom=): the daemon keeps its running
# configuration, the watch locks down.
inside systemctl reload "$UNIT"
locked() { inside journalctl -u assume-roled-guard --no-pager -o cat | grep -q 'refused to every user but root'; }
wait_until 10 locked || fail "the watch did not lock down on a broken configuration"
[ -z "$(instance_keys_as member)" ] || fail "a formerly exempt user read the instance keys under the lockdown"
[ -z "$(instance_keys_as outsider)" ] || fail "a test user read the instance role's keys under the lockdown"
[ -n "$(instance_keys_as root)" ] || fail "root lost the instance metadata under the lockdown"
is_state active || fail "the daemon's reload of a broken file took it down"
nft flush ruleset
guard_back_ms >/dev/null
[ -z "$(instance_keys_as outsider)" ] || fail "the lockdown was not put back after a flush"
ok "a broken configuration, reaching the watch through the daemon's reload, puts the lockdown in place (root only), and it is kept too"
inside systemctl disable --now nftables >/dev/null 2>&1 || true

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

say "a boot with STS unreachable and the service enabled"
kill "$gate_pid"
wait "$gate_pid" 2>/dev/null || true
write_config piyo
guard_lines >>"$root/etc/assume-roled/config.toml"
inside systemctl enable "$UNIT" >/dev/null 2>&1
poweroff
started=$(date +%s%N)
boot
multi_user() { [ "$(inside systemctl is-active multi-user.target)" = active ]; }
wait_until 150 multi_user || fail "multi-user.target was not reached"
boot_ms=$((($(date +%s%N) - started) / 1000000))
[ "$boot_ms" -lt 60000 ] || fail "the boot took $boot_ms ms"
is_state active || fail "the service is $(inside systemctl is-active $UNIT) after the boot"
wait_until 10 status_is "waiting for STS: piyo: Unreachable" || fail "status: $(property StatusText)"
nft list table inet assume_roled >/dev/null || fail "no guard table after the boot"
[ -z "$(instance_keys_as outsider)" ] || fail "a test user read the instance role's keys"
ok "with STS unreachable, the boot reached multi-user.target in $boot_ms ms (the start timeout is 120 s); the service is active and says why it has no credentials"
open_gate
wait_until 60 status_is "serving 1 role, credentials valid until *" || fail "status: $(property StatusText)"
ok "credentials arrive once STS answers, status: $(property StatusText)"

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
[ "$(inside systemctl is-active assume-roled-guard || true)" = inactive ] || fail "the guard's watch is still running"
! nft list table inet assume_roled >/dev/null 2>&1 || fail "removal left the guard's table"
ok "removal stops the service, the socket and the guard's watch, removes the guard's table, and keeps the configuration"
inside dpkg -P assume-roled >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "purge failed"; }
[ ! -e "$root/etc/assume-roled" ] && [ ! -e "$root/var/lib/assume-roled" ] ||
  fail "purge left $(ls -d "$root/etc/assume-roled" "$root/var/lib/assume-roled" 2>/dev/null)"
ok "purge deletes the configuration and the state directory"

# The .rpm, installed and run under the same systemd: Debian's rpm has no Amazon Linux beneath
# it (--nodeps: its dependencies are Amazon Linux's packages), but the package's own scriptlets,
# preset and files meet a real systemd (README, Install: what this shows and what it does not).
say "the .rpm under systemd: install, serve, remove"
ONLY=rpm BIN="$BIN" VERSION="$version" OUT="$work/package" "$ROOT/packaging/build.sh" >/dev/null
# The .deb's user and group outlive its purge (as Debian's system users do): gone first, so that
# the .rpm is seen making them.
inside userdel assume-roled && inside groupdel assume-roled || fail "could not remove the .deb's user"
unit_active() { [ "$(inside systemctl is-active "$1" || true)" = active ]; }
cp "$work/package/assume-roled-$version-1.x86_64.rpm" "$root/var/tmp/"
inside rpm -i --nodeps "/var/tmp/assume-roled-$version-1.x86_64.rpm" >"$work/rpm.log" 2>&1 ||
  { cat "$work/rpm.log"; fail "rpm -i failed"; }
inside getent passwd assume-roled >/dev/null || fail "the .rpm's %pre did not make the user"
# Owner and group as the container names them (the host's names for its ids differ).
[ "$(inside stat -c '%a %U:%G' /etc/assume-roled/config.toml)" = "640 root:assume-roled" ] ||
  fail "the .rpm's configuration is $(inside stat -c '%a %U:%G' /etc/assume-roled/config.toml)"
for unit in "$UNIT.socket" assume-roled-guard.service; do
  [ "$(inside systemctl is-enabled "$unit")" = enabled ] || fail "the .rpm's preset did not enable $unit"
  wait_until 10 unit_active "$unit" || fail "the .rpm did not start $unit"
done
[ "$(inside systemctl is-enabled "$UNIT.service" || true)" = disabled ] || fail "the .rpm enabled the service"
ok "the .rpm installs: user, configuration 0640 root:assume-roled, socket and guard's watch enabled and started, service left to the operator"
write_config piyo
# The first request starts the service, which makes the token; then a client asks with it.
curl -s -o /dev/null "http://127.0.0.1:$listen_port/readyz" || true
wait_until 20 is_state active || fail "a request to the .rpm's socket did not start the service"
wait_until 20 test -s "$root/var/lib/assume-roled/token" || fail "the .rpm's service made no token"
serves_piyo() { [ "$(fetch piyo)" = 200 ]; }
wait_until 20 serves_piyo || fail "through the .rpm's socket: $(fetch piyo) $(cat "$work/answer")"
ok "a request to the .rpm's socket starts the service, which serves credentials"
inside rpm -e assume-roled >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; fail "rpm -e failed"; }
[ ! -e "$root/usr/bin/assume-roled" ] || fail "rpm -e left the binary"
is_state inactive || fail "the service is $(inside systemctl is-active $UNIT) after rpm -e"
for unit in "$UNIT.socket" assume-roled-guard.service; do
  [ "$(inside systemctl is-active "$unit" || true)" = inactive ] || fail "rpm -e left $unit running"
done
ok "rpm -e stops and disables the service, the socket and the guard's watch, and removes the files"

say "all $checks systemd checks passed"
