#!/usr/bin/env bash
# `make package-test`: what the packages of `make package` (target/package) are, checked from
# the outside. Run after `make package`; CI runs both.
#   1. lintian passes every .deb and rpmlint every .rpm: no error, no warning but those
#      overridden with a reason (packaging/debian/lintian-overrides, packaging/rpm/rpmlint.toml);
#   2. every package and tarball carries the licence, the third-party notices and the changelog;
#   3. the aarch64 binary (from the arm64 .deb) runs under emulation (qemu-user-static):
#      `--version`, `check`, and `serve` answering a real client (the aws CLI) with credentials
#      it obtained from moto;
#   4. reproducible: `make package` in a second clone of this commit, at another path, writes a
#      byte-identical SHA256SUMS (REPRODUCE=0 skips it, for a quick run; CI does not).
set -euo pipefail
# Producers are piped into grep without -q: grep -q stops reading at the first match, and the
# producer's SIGPIPE would fail the pipeline (pipefail).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
OUT=${OUT:-$ROOT/target/package}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# The work directory, cleanup at exit, say, free_port, wait_until, start_moto.
source tests/support/stand_ins.sh
ok() { printf 'ok: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
[ -s "$OUT/SHA256SUMS" ] || fail "no packages in $OUT: run make package first"
(cd "$OUT" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the files in $OUT"
debs=("$OUT"/assume-roled_"$VERSION"_{amd64,arm64}.deb)
rpms=("$OUT"/assume-roled-"$VERSION"-1.{x86_64,aarch64}.rpm)
tarballs=("$OUT"/assume-roled-"$VERSION"-{x86_64-unknown-linux-musl,aarch64-unknown-linux-gnu}.tar.gz)
for file in "${debs[@]}" "${rpms[@]}" "${tarballs[@]}"; do
  [ -f "$file" ] || fail "make package did not write $file"
  grep -q " ${file##*/}\$" "$OUT/SHA256SUMS" || fail "${file##*/} is not in SHA256SUMS"
done
ok "x86_64 and aarch64: two .debs, two .rpms, two tarballs, all in SHA256SUMS"
# The C library the packages ask for is the one Amazon Linux 2023 has (2.34) or older.
for deb in "${debs[@]}"; do
  glibc=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
  dpkg --compare-versions "$glibc" le 2.34 || fail "${deb##*/} needs glibc $glibc, newer than Amazon Linux 2023's 2.34"
done

say "1. lintian and rpmlint"
for deb in "${debs[@]}"; do
  # Errors and warnings fail; what is right for this package is overridden in the package,
  # with a reason (lintian reads the overrides from the .deb itself).
  lintian --fail-on error,warning --no-tag-display-limit "$deb" || fail "lintian: ${deb##*/}"
  ok "lintian: ${deb##*/}"
done
for rpm in "${rpms[@]}"; do
  status=0
  out=$(rpmlint -c packaging/rpm/rpmlint.toml "$rpm" 2>&1) || status=$?
  echo "$out" | tail -n 1
  [ "$status" = 0 ] && grep -Eq '(^|[^0-9])0 errors, 0 warnings' <<<"$out" || { echo "$out"; fail "rpmlint: ${rpm##*/}"; }
  ok "rpmlint: ${rpm##*/}"
done

say "2. licence, notices and changelog in every package"
for deb in "${debs[@]}"; do
  listing=$(dpkg-deb -c "$deb")
  for path in copyright changelog.gz changelog.Debian.gz THIRD-PARTY-NOTICES.gz; do
    grep -q "/usr/share/doc/assume-roled/$path\$" <<<"$listing" || fail "${deb##*/} has no $path"
  done
  dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/assume-roled/copyright |
    grep '^License: MIT or Apache-2.0$' >/dev/null || fail "${deb##*/}: the copyright file names another licence"
done
for rpm in "${rpms[@]}"; do
  [ "$(rpm -qp --queryformat '%{LICENSE}' "$rpm" 2>/dev/null)" = "MIT OR Apache-2.0" ] ||
    fail "${rpm##*/}: License is not MIT OR Apache-2.0"
  files=$(rpm -qlp "$rpm" 2>/dev/null)
  for path in licenses/assume-roled/LICENSE-MIT licenses/assume-roled/LICENSE-APACHE \
    doc/assume-roled/THIRD-PARTY-NOTICES doc/assume-roled/CHANGELOG.md; do
    grep -q "/usr/share/$path\$" <<<"$files" || fail "${rpm##*/} has no /usr/share/$path"
  done
done
for tarball in "${tarballs[@]}"; do
  name=$(basename "$tarball" .tar.gz)
  listing=$(tar -tzf "$tarball")
  for path in LICENSE-MIT LICENSE-APACHE THIRD-PARTY-NOTICES CHANGELOG.md INSTALL.txt assume-roled; do
    grep -qx "$name/$path" <<<"$listing" || fail "${tarball##*/} has no $path"
  done
done
# The notice names every crate of the binary with its licence, and carries their texts.
notice=$(dpkg-deb --fsys-tarfile "${debs[0]}" | tar -xO ./usr/share/doc/assume-roled/THIRD-PARTY-NOTICES.gz | gunzip)
for crate in tokio aws-sdk-sts rustls hyper; do
  grep -Eq "^$crate [0-9.]+: " <<<"$notice" || fail "the third-party notice does not name $crate"
done
grep -q 'Permission is hereby granted, free of charge' <<<"$notice" || fail "the notice carries no MIT text"
grep -q 'TERMS AND CONDITIONS FOR USE, REPRODUCTION' <<<"$notice" || fail "the notice carries no Apache text"
ok "licence, copyright, notices (with the crates' licence texts) and changelogs in all six"

# The man pages and completions, in both packages' places; man renders every page without a
# warning, and the command page names every command.
dpkg-deb -x "${debs[0]}" "$work/amd64"
pages=("$work"/amd64/usr/share/man/man8/*.8.gz "$work"/amd64/usr/share/man/man5/*.5.gz)
[ ${#pages[@]} = 9 ] || fail "the .deb has ${#pages[@]} man pages, not 9 (assume-roled, 7 commands, the file)"
for page in "${pages[@]}"; do
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
  [ -z "$warnings" ] || fail "man warns about ${page##*/}: $warnings"
done
rendered=$(MANWIDTH=80 man -l "$work/amd64/usr/share/man/man8/assume-roled.8.gz" 2>/dev/null)
for command in serve check status guard env; do
  grep -q "assume-roled-$command(8)" <<<"$rendered" || fail "assume-roled(8) does not name $command"
done
MANWIDTH=80 man -l "$work/amd64/usr/share/man/man5/assume-roled.toml.5.gz" 2>/dev/null | grep 'roles\[\]\.arn' >/dev/null ||
  fail "assume-roled.toml(5) does not document roles[].arn"
for path in /usr/share/bash-completion/completions/assume-roled /usr/share/zsh/vendor-completions/_assume-roled \
  /usr/share/fish/vendor_completions.d/assume-roled.fish; do
  [ -s "$work/amd64$path" ] || fail "the .deb has no $path"
done
bash -c "source '$work/amd64/usr/share/bash-completion/completions/assume-roled' && complete -p assume-roled" >/dev/null ||
  fail "the bash completion does not register for assume-roled"
for path in /usr/share/man/man8/assume-roled.8.gz /usr/share/zsh/site-functions/_assume-roled \
  /usr/share/fish/vendor_completions.d/assume-roled.fish; do
  rpm -qlp "${rpms[0]}" 2>/dev/null | grep -x "$path" >/dev/null || fail "the .rpm has no $path"
done
# The other packages and the tarballs carry the same pages and completions.
dpkg-deb -c "${debs[1]}" | grep '/usr/share/man/man5/assume-roled.toml.5.gz$' >/dev/null || fail "the arm64 .deb has no man pages"
rpm -qlp "${rpms[1]}" 2>/dev/null | grep -x /usr/share/man/man8/assume-roled.8.gz >/dev/null || fail "the aarch64 .rpm has no man pages"
for tarball in "${tarballs[@]}"; do
  name=$(basename "$tarball" .tar.gz)
  [ "$(tar -tzf "$tarball" | grep -Ec "^$name/(man8/.*\.8|man5/.*\.5|completions/.+)$")" = 12 ] ||
    fail "${tarball##*/} lacks man pages or completions"
done
ok "9 man pages that man renders without a warning (every command named; assume-roled.toml(5) made from the README's reference); bash, zsh and fish completions in both packages"

say "3. the aarch64 binary, under emulation"
command -v qemu-aarch64-static >/dev/null || fail "qemu-aarch64-static is missing: apt-get install qemu-user-static"
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || fail "the aarch64 C library is missing: apt-get install libc6-arm64-cross"
dpkg-deb -x "${debs[1]}" "$work/arm64"
arm64=$work/arm64/usr/bin/assume-roled
file "$arm64" | grep 'ARM aarch64' >/dev/null || fail "the arm64 .deb's binary is not an aarch64 program: $(file "$arm64")"
# qemu runs the binary with the cross C library (-L), as it would run on a Graviton host.
run_arm64() { qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm64" "$@"; }
run_arm64 --version | grep -E "^assume-roled $VERSION \(commit [0-9a-f]{12}(-modified)?\)$" >/dev/null ||
  fail "aarch64 --version: $(run_arm64 --version 2>&1)"
# The commit it names is this tree's (a tree with uncommitted changes says so).
commit=$(git rev-parse --short=12 HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || commit+=-modified
run_arm64 --version | grep "(commit $commit)" >/dev/null || fail "aarch64 --version names another commit than $commit"
ok "aarch64: $(run_arm64 --version)"
start_moto
port=$(free_port)
cat >"$work/config.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
token_file = "$work/token"
[sts]
region = "us-east-1"
endpoint = "http://127.0.0.1:$moto_port"
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
EOF
run_arm64 check --config "$work/config.toml" >"$work/check.out" || fail "aarch64 check: $(cat "$work/check.out")"
ok "aarch64: check accepts the configuration"
status=0
run_arm64 check --config "$work/nonexistent.toml" >/dev/null 2>&1 || status=$?
[ "$status" = 78 ] || fail "aarch64 check of a missing file exited $status, not 78"
ok "aarch64: check of a missing configuration exits 78"
env -i PATH="$PATH" "${host_env[@]}" qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm64" serve \
  --config "$work/config.toml" 2>"$work/serve.log" &
pids+=($!)
# Emulated, start-up takes seconds rather than milliseconds.
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/serve.log"; fail "the aarch64 daemon never became ready"; }
# A real client, as a user runs it: the aws CLI with the two variables `assume-roled env` prints.
identity=$(env -i PATH="$PATH" HOME="$work" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
  AWS_EC2_METADATA_DISABLED=true AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:$port/roles/piyo" \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/token" \
  "$VENV/bin/aws" --endpoint-url "http://127.0.0.1:$moto_port" sts get-caller-identity --query Arn --output text) ||
  fail "the aws CLI got no answer through the aarch64 daemon"
[[ "$identity" == arn:aws:sts::444455556666:assumed-role/piyo-role/* ]] ||
  fail "through the aarch64 daemon the aws CLI is $identity, not piyo-role"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/roles/piyo")
[ "$code" = 401 ] || fail "the aarch64 daemon answered $code to a request without the token"
ok "aarch64: serves piyo-role's credentials from moto to the aws CLI ($identity); 401 without the token"

if [ "${REPRODUCE:-1}" != 0 ]; then
  say "4. reproducible: make package in a second clone, at another path"
  clone=$work/elsewhere/assume-roled-second-clone
  git clone --quiet "$ROOT" "$clone"
  git -C "$clone" checkout --quiet "$(git rev-parse HEAD)"
  [ -z "$(git status --porcelain --untracked-files=no)" ] ||
    fail "the working tree has uncommitted changes: the clone would not build the same source"
  (cd "$clone" && OUT="$work/second" packaging/build.sh >/dev/null)
  if ! diff "$OUT/SHA256SUMS" "$work/second/SHA256SUMS"; then
    fail "a second build at $clone wrote other bytes (above: this tree's sums, then the clone's)"
  fi
  ok "a clone at another path wrote the same bytes: $(wc -l <"$OUT/SHA256SUMS") files, SHA256SUMS identical"
fi
