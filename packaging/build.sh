#!/usr/bin/env bash
# `make package`: writes into target/package/
#   assume-roled_<version>_<arch>.deb          (dpkg-deb)
#   assume-roled-<version>-1.<arch>.rpm        (rpmbuild, from the same staged tree)
#   assume-roled-<version>-x86_64-unknown-linux-musl.tar.gz   (a static build, units and docs)
#   SHA256SUMS
# The packages carry the release build for the GNU target: with glibc the daemon knows users
# and groups through the system's name service (SSSD, LDAP), which per-user sessions and
# allowed_groups rely on. The static musl binary runs on any Linux, but knows users and groups
# from /etc/passwd and /etc/group only (README, Install).
#
# Both packages are staged by `make install` (PREFIX=/usr, the example under the
# documentation directory, nothing enabled: the maintainer scripts do that). Everything is
# built as the calling user. Tools: dpkg-deb and objdump (the Debian build host), rpmbuild
# (`apt-get install rpm`), musl-gcc (`apt-get install musl-tools`) and the musl target
# (`rustup target add x86_64-unknown-linux-musl`); a missing one is named.
#
# Knobs: OUT (target/package), VERSION (Cargo.toml's), ONLY (a subset of "deb rpm tarball"),
# BIN (package this binary instead of building the release one; the tarball always builds).
set -euo pipefail
# Whatever the builder's umask, the packages' directories are 0755 and files as installed.
umask 022
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
OUT=${OUT:-$ROOT/target/package}
ONLY=${ONLY:-deb rpm tarball}
MUSL=x86_64-unknown-linux-musl

fail() { echo "package: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: $2"; }
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
built=()

if [ -z "${BIN:-}" ] && { wanted deb || wanted rpm; }; then
  cargo build --release --locked --quiet
  BIN=$ROOT/target/release/assume-roled
  # A stale or unapplied link order (build.rs) costs idle memory, nothing else: say so loudly,
  # but a rustc update must not stop a release.
  bench/link-order.sh check --warn "$BIN"
fi

# stage DIR: the packages' tree, as `make install` lays it out under /usr and /etc.
stage() {
  make --no-print-directory install DESTDIR="$1" PREFIX=/usr SYSCONFDIR=/etc \
    EXAMPLEDIR=/usr/share/doc/assume-roled ENABLE=no BIN="$BIN" >/dev/null
  install -m 0644 README.md "$1/usr/share/doc/assume-roled/README.md"
}

if wanted deb; then
  need dpkg-deb "apt-get install dpkg"
  need objdump "apt-get install binutils"
  tree=$work/deb
  stage "$tree"
  mkdir -m 0755 "$tree/DEBIAN"
  install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$tree/DEBIAN/"
  printf '%s\n' /etc/assume-roled/config.toml /etc/profile.d/assume-roled.sh >"$tree/DEBIAN/conffiles"
  arch=$(dpkg --print-architecture)
  # The newest glibc symbol version the binary needs is the C library it depends on.
  glibc=$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
  size=$(du -sk --exclude=DEBIAN "$tree" | cut -f 1)
  sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/libc6 (>= $glibc)/" packaging/debian/control.in >"$tree/DEBIAN/control"
  deb=$OUT/assume-roled_${VERSION}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
  built+=("$deb")
fi

if wanted rpm; then
  need rpmbuild "apt-get install rpm"
  [ "$(uname -m)" = x86_64 ] || fail "the .rpm is built for x86_64 only"
  tree=$work/rpm-stage
  stage "$tree"
  install -D -m 0644 packaging/assume-roled.preset "$tree/usr/lib/systemd/system-preset/80-assume-roled.preset"
  rpmbuild -bb --quiet --target x86_64 \
    --define "_topdir $work/rpmbuild" --define "version $VERSION" --define "stage $tree" \
    --define "debug_package %{nil}" --define "_build_id_links none" \
    packaging/rpm/assume-roled.spec >"$work/rpmbuild.log" 2>&1 ||
    { cat "$work/rpmbuild.log" >&2; fail "rpmbuild failed"; }
  rpm=$OUT/assume-roled-$VERSION-1.x86_64.rpm
  cp "$work/rpmbuild/RPMS/x86_64/assume-roled-$VERSION-1.x86_64.rpm" "$rpm"
  built+=("$rpm")
fi

if wanted tarball; then
  need musl-gcc "apt-get install musl-tools"
  rustup target list --installed 2>/dev/null | grep -qx "$MUSL" ||
    fail "the $MUSL target is missing: rustup target add $MUSL"
  # The musl target links with the C toolchain's ld, which has no ordering option: no link
  # order, and no build.rs warning about it.
  ASSUME_ROLED_LINK_ORDER=0 cargo build --release --locked --quiet --target "$MUSL"
  name=assume-roled-$VERSION-$MUSL
  dir=$work/$name
  mkdir -p "$dir/systemd"
  install -m 0755 "target/$MUSL/release/assume-roled" "$dir/assume-roled"
  for unit in assume-roled.service assume-roled-guard.service; do
    sed 's|@BINDIR@|/usr/local/bin|' "systemd/$unit" >"$dir/systemd/$unit"
  done
  cp systemd/assume-roled.socket systemd/assume-roled-containers.socket systemd/assume-roled.sysusers \
    systemd/assume-roled.tmpfiles systemd/profile.sh systemd/config.toml "$dir/systemd/"
  cp README.md config.example.toml packaging/INSTALL.txt "$dir/"
  chmod 0644 "$dir"/systemd/* "$dir"/*.md "$dir"/*.toml "$dir"/*.txt
  tarball=$OUT/$name.tar.gz
  tar --owner=0 --group=0 --numeric-owner --sort=name -C "$work" -czf "$tarball" "$name"
  built+=("$tarball")
fi

[ ${#built[@]} -gt 0 ] || fail "nothing was packaged (ONLY=$ONLY)"
# The sums of what this run built, not of older files left in OUT.
(cd "$OUT" && sha256sum -- "${built[@]##*/}" >SHA256SUMS)
printf '%s\n' "${built[@]}" "$OUT/SHA256SUMS"
