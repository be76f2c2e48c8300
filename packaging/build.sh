#!/usr/bin/env bash
# `make package`: writes into target/package/, for each architecture in ARCHES (x86_64 aarch64)
#   assume-roled_<version>_<amd64|arm64>.deb           (dpkg-deb)
#   assume-roled-<version>-1.<x86_64|aarch64>.rpm      (rpmbuild, from the same staged tree)
#   assume-roled-<version>-x86_64-unknown-linux-musl.tar.gz    (static: runs on any x86_64 Linux)
#   assume-roled-<version>-aarch64-unknown-linux-gnu.tar.gz    (glibc: Debian has no musl cross
#                                                               compiler for aarch64)
#   SHA256SUMS
# The packages carry the release build for the GNU target: with glibc the daemon knows users
# and groups through the system's name service (SSSD, LDAP), which per-user sessions and
# allowed_groups rely on. The static musl binary knows users and groups from /etc/passwd and
# /etc/group only (README, Install). aarch64 is cross-built (gcc-aarch64-linux-gnu) without the
# link order, which lists x86_64 code (README, Benchmarks).
#
# Reproducible: two runs, or two clones of one commit at different paths, write the same bytes
# (the binaries are built from the same sources with the same toolchain, and stripped; every
# archive gets SOURCE_DATE_EPOCH, the last commit's time, as its files' and its own time, fixed
# owners and a sorted order). `make package-test` checks it with a second clone.
#
# Both packages are staged by `make install` (PREFIX=/usr, the example under the documentation
# directory, nothing enabled: the maintainer scripts do that), plus the licence, copyright,
# changelogs and third-party notices. Everything is built as the calling user. Tools: dpkg-deb,
# binutils (the Debian build host), rpmbuild (`apt-get install rpm`), musl-gcc (`apt-get
# install musl-tools`), gcc-aarch64-linux-gnu, and the Rust targets (`rustup target add
# x86_64-unknown-linux-musl aarch64-unknown-linux-gnu`); a missing one is named.
#
# Knobs: OUT (target/package), VERSION (Cargo.toml's), ONLY (a subset of "deb rpm tarball"),
# ARCHES (a subset of "x86_64 aarch64"), BIN (package this x86_64 binary instead of building the
# release one; then ARCHES is x86_64 and no tarball is built).
set -euo pipefail
# A failing command inside $(...) fails the script too (a failed build must not ship an older
# binary left in the target directory).
shopt -s inherit_errexit
# Whatever the builder's umask, the packages' directories are 0755 and files as installed.
umask 022
# OUT and BIN as the caller named them, before the cd below.
[ -z "${OUT:-}" ] || OUT=$(realpath -m "$OUT")
[ -z "${BIN:-}" ] || BIN=$(realpath "$BIN")
# The physical path: the one the compiler sees, and remaps.
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$ROOT"
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
OUT=${OUT:-$ROOT/target/package}
ONLY=${ONLY:-deb rpm tarball}
if [ -n "${BIN:-}" ]; then ARCHES=x86_64 ONLY=${ONLY/tarball/}; fi
ARCHES=${ARCHES:-x86_64 aarch64}
# The last commit's time: every file in every archive, and the archives' own times.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# The commit `--version` names; a tree with uncommitted changes is not that commit, and says so.
if [ -z "${ASSUME_ROLED_COMMIT:-}" ]; then
  ASSUME_ROLED_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || ASSUME_ROLED_COMMIT+=-modified
fi
export ASSUME_ROLED_COMMIT
export TZ=UTC LC_ALL=C
# The release builds: in a target directory of their own, with the paths of this checkout and of
# cargo's sources replaced in the binaries (panic locations name them; a clone elsewhere, or
# another machine, would otherwise build other bytes). Their own directory, because other flags
# would make every build in target/release (make, the benchmarks) start over.
CARGO_HOME=$(realpath "${CARGO_HOME:-$HOME/.cargo}")
release_cargo=(env CARGO_TARGET_DIR="$ROOT/target/package-build"
  CARGO_ENCODED_RUSTFLAGS="--remap-path-prefix=$ROOT=/build/assume-roled"$'\x1f'"--remap-path-prefix=$CARGO_HOME=/cargo" cargo)

fail() { echo "package: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: $2"; }
wanted() { [[ " $ONLY " == *" $1 "* ]]; }
need_target() {
  rustup target list --installed 2>/dev/null | grep -qx "$1" || fail "the $1 target is missing: rustup target add $1"
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"
built=()

# arch_names ARCH: sets rust_target, deb_arch, tools (the binutils prefix) and musl (the static
# target, empty where there is none) for ARCH.
arch_names() {
  case $1 in
    x86_64) rust_target=x86_64-unknown-linux-gnu deb_arch=amd64 tools='' musl=x86_64-unknown-linux-musl ;;
    aarch64) rust_target=aarch64-unknown-linux-gnu deb_arch=arm64 tools=aarch64-linux-gnu- musl='' ;;
    *) fail "unknown architecture $1 (ARCHES: x86_64 aarch64)" ;;
  esac
}

# release_binary ARCH: builds the release binary for ARCH and prints its path.
release_binary() {
  arch_names "$1"
  if [ "$1" = x86_64 ]; then
    "${release_cargo[@]}" build --release --locked --quiet
    # A stale or unapplied link order (build.rs) costs idle memory, nothing else: say so
    # loudly, but a rustc update must not stop a release.
    bench/link-order.sh check --warn target/package-build/release/assume-roled >&2
    echo "$ROOT/target/package-build/release/assume-roled"
    return
  fi
  need "${tools}gcc" "apt-get install gcc-aarch64-linux-gnu"
  need_target "$rust_target"
  # The C parts (aws-lc) and the link with the cross compiler; no link order (x86_64 names).
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${tools}gcc CC_aarch64_unknown_linux_gnu=${tools}gcc \
    AR_aarch64_unknown_linux_gnu=${tools}ar ASSUME_ROLED_LINK_ORDER=0 \
    "${release_cargo[@]}" build --release --locked --quiet --target "$rust_target"
  echo "$ROOT/target/package-build/$rust_target/release/assume-roled"
}

# stripped BINARY ARCH [NAME]: a copy of BINARY (for ARCH) without its symbol table (the
# packages ship it so; a panic's backtrace then names addresses, not functions), in the work
# directory as assume-roled-NAME (ARCH); prints its path.
stripped() {
  arch_names "$2"
  need "${tools}strip" "apt-get install binutils${tools:+-${tools%-}}"
  local copy=$work/assume-roled-${3:-$2}
  "${tools}strip" --strip-all --remove-section=.comment -o "$copy" "$1"
  echo "$copy"
}

# glibc_of BINARY: the newest glibc symbol version BINARY needs: the C library it depends on
# (uses the binutils of the last arch_names).
glibc_of() { "${tools}objdump" -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1; }

# The man pages and completions, from the command line's definition and the README (made once,
# the same for every architecture): $work/generated/{man5,man8,completions}.
generated() {
  if [ ! -d "$work/generated" ]; then
    cargo run --locked --quiet --example manpages -- "$work/generated" >&2
  fi
  echo "$work/generated"
}

# manuals DIR ZSH_DIR: the man pages (compressed, as both distributions install them) and the
# completions under the root DIR, zsh's in ZSH_DIR (Debian and Fedora differ).
manuals() {
  local pages
  pages=$(generated)
  install -d -m 0755 "$1/usr/share/man/man5" "$1/usr/share/man/man8"
  for page in "$pages"/man5/* "$pages"/man8/*; do
    local section=${page%/*}
    gzip -9 -n -c "$page" >"$1/usr/share/man/${section##*/}/${page##*/}.gz"
    chmod 0644 "$1/usr/share/man/${section##*/}/${page##*/}.gz"
  done
  install -D -m 0644 "$pages/completions/assume-roled.bash" "$1/usr/share/bash-completion/completions/assume-roled"
  install -D -m 0644 "$pages/completions/_assume-roled" "$1$2/_assume-roled"
  install -D -m 0644 "$pages/completions/assume-roled.fish" "$1/usr/share/fish/vendor_completions.d/assume-roled.fish"
}

# deb_depends BINARY GLIBC: the C libraries BINARY links, as Debian packages (the two a Rust
# program links; another one fails the build rather than go undeclared).
deb_depends() {
  local needed depends="libc6 (>= $2)"
  for needed in $("${tools}objdump" -p "$1" | awk '/NEEDED/ {print $2}'); do
    case $needed in
      libc.so.6 | libm.so.6 | ld-linux*) ;;
      libgcc_s.so.1) depends+=", libgcc-s1" ;;
      *) fail "$1 links $needed, which the .deb would not declare" ;;
    esac
  done
  echo "$depends"
}

# docs DIR: the documentation every package and tarball carries, into DIR.
docs() {
  install -d -m 0755 "$1"
  install -m 0644 README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE "$1/"
  notice "$1/THIRD-PARTY-NOTICES"
}

# notice FILE: the third-party notices (made once per run) copied to FILE.
notice() {
  [ -s "$work/THIRD-PARTY-NOTICES" ] || python3 scripts/licences.py notice "$work/THIRD-PARTY-NOTICES"
  install -m 0644 "$work/THIRD-PARTY-NOTICES" "$1"
}

# stage DIR BINARY: the packages' tree, as `make install` lays it out under /usr and /etc.
stage() {
  make --no-print-directory install DESTDIR="$1" PREFIX=/usr SYSCONFDIR=/etc \
    EXAMPLEDIR=/usr/share/doc/assume-roled ENABLE=no BIN="$2" >/dev/null
}

# settle DIR: every file's time the source's (SOURCE_DATE_EPOCH), for archives that say the same
# whenever they are made.
settle() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

# build_deb BINARY ARCH: the .deb.
build_deb() {
  arch_names "$2"
  need dpkg-deb "apt-get install dpkg"
  local tree=$work/deb-$2 doc
  stage "$tree" "$1"
  manuals "$tree" /usr/share/zsh/vendor-completions
  doc=$tree/usr/share/doc/assume-roled
  # Debian's documentation layout: the copyright file, the changelogs compressed.
  install -m 0644 packaging/debian/copyright "$doc/copyright"
  notice "$doc/THIRD-PARTY-NOTICES"
  install -m 0644 README.md "$doc/README.md"
  install -m 0644 CHANGELOG.md "$doc/changelog"
  sed -e "s/@VERSION@/$VERSION/" -e "s/@DATE@/$(date -u -R -d "@$SOURCE_DATE_EPOCH")/" \
    packaging/debian/changelog.in >"$doc/changelog.Debian"
  gzip -9 -n "$doc/changelog" "$doc/changelog.Debian" "$doc/THIRD-PARTY-NOTICES" "$doc/README.md"
  install -D -m 0644 packaging/debian/lintian-overrides "$tree/usr/share/lintian/overrides/assume-roled"
  mkdir -m 0755 "$tree/DEBIAN"
  install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$tree/DEBIAN/"
  printf '%s\n' /etc/assume-roled/config.toml /etc/profile.d/assume-roled.sh >"$tree/DEBIAN/conffiles"
  chmod 0644 "$tree/DEBIAN/conffiles"
  # The newest glibc symbol version the binary needs is the C library it depends on.
  local glibc size
  glibc=$(glibc_of "$1")
  # Apparent sizes: what the files hold, whatever the file system they were staged on.
  size=$(du -s --apparent-size --block-size=1K --exclude=DEBIAN "$tree" | cut -f 1)
  sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$deb_arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$(deb_depends "$1" "$glibc")/" packaging/debian/control.in >"$tree/DEBIAN/control"
  (cd "$tree" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$tree/DEBIAN/md5sums"
  chmod 0644 "$tree/DEBIAN/md5sums"
  settle "$tree"
  local deb=$OUT/assume-roled_${VERSION}_${deb_arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
  built+=("$deb")
}

# build_rpm BINARY ARCH: the .rpm.
build_rpm() {
  need rpmbuild "apt-get install rpm"
  local tree=$work/rpm-$2
  stage "$tree" "$1"
  manuals "$tree" /usr/share/zsh/site-functions
  install -D -m 0644 packaging/assume-roled.preset "$tree/usr/lib/systemd/system-preset/80-assume-roled.preset"
  install -m 0644 README.md CHANGELOG.md "$tree/usr/share/doc/assume-roled/"
  notice "$tree/usr/share/doc/assume-roled/THIRD-PARTY-NOTICES"
  install -D -m 0644 LICENSE-MIT "$tree/usr/share/licenses/assume-roled/LICENSE-MIT"
  install -m 0644 LICENSE-APACHE "$tree/usr/share/licenses/assume-roled/LICENSE-APACHE"
  settle "$tree"
  # Nothing of rpmbuild's own post-processing: the binary is stripped already (and rpmbuild's
  # strip is the host's, which cannot read an aarch64 binary); times from the source.
  rpmbuild -bb --quiet --target "$2" \
    --define "_topdir $work/rpmbuild-$2" --define "version $VERSION" --define "stage $tree" \
    --define "debug_package %{nil}" --define "_build_id_links none" --define "__os_install_post %{nil}" \
    --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_epoch 1" \
    --define "_buildhost reproducible" \
    --define "changelog_date $(date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')" \
    packaging/rpm/assume-roled.spec >"$work/rpmbuild.log" 2>&1 ||
    { cat "$work/rpmbuild.log" >&2; fail "rpmbuild failed"; }
  local rpm=$OUT/assume-roled-$VERSION-1.$2.rpm
  cp "$work/rpmbuild-$2/RPMS/$2/assume-roled-$VERSION-1.$2.rpm" "$rpm"
  built+=("$rpm")
}

# build_tarball ARCH GLIBC_BINARY: the static musl build where the architecture has one, else the
# glibc binary; with the units and docs.
build_tarball() {
  arch_names "$1"
  local binary=$2 target=$rust_target
  if [ -n "$musl" ]; then
    need musl-gcc "apt-get install musl-tools"
    need_target "$musl"
    # The musl target links with the C toolchain's ld, which has no ordering option: no link
    # order, and no build.rs warning about it.
    ASSUME_ROLED_LINK_ORDER=0 "${release_cargo[@]}" build --release --locked --quiet --target "$musl"
    binary=$(stripped "target/package-build/$musl/release/assume-roled" "$1" "$1-musl")
    target=$musl
  fi
  local name=assume-roled-$VERSION-$target
  local dir=$work/$name
  mkdir -p "$dir/systemd"
  install -m 0755 "$binary" "$dir/assume-roled"
  for unit in assume-roled.service assume-roled-guard.service; do
    sed 's|@BINDIR@|/usr/local/bin|' "systemd/$unit" >"$dir/systemd/$unit"
  done
  cp systemd/assume-roled.socket systemd/assume-roled-containers.socket systemd/assume-roled.sysusers \
    systemd/assume-roled.tmpfiles systemd/profile.sh systemd/config.toml "$dir/systemd/"
  local build about
  if [ -n "$musl" ]; then
    build="static build ($1, musl)"
    about="This binary runs on any $1 Linux. It knows users and groups from /etc/passwd and
/etc/group only: on hosts whose users come from SSSD or LDAP, use the .deb or .rpm, whose
binary asks the system's name service."
  else
    build="build for $1 (glibc)"
    about="This binary runs on $1 Linux with glibc $(glibc_of "$binary") or newer (Amazon Linux 2023,
Debian 12, Ubuntu 22.04 and later), and knows users and groups through the system's name
service, like the .deb and .rpm."
  fi
  awk -v build="$build" -v about="$about" '{ sub(/@BUILD@/, build); sub(/@ABOUT@/, about); print }' \
    packaging/INSTALL.txt >"$dir/INSTALL.txt"
  cp config.example.toml session-policy.example.json "$dir/"
  docs "$dir"
  cp -r "$(generated)/man5" "$(generated)/man8" "$(generated)/completions" "$dir/"
  chmod 0644 "$dir"/man5/* "$dir"/man8/* "$dir"/completions/*
  chmod 0644 "$dir"/systemd/* "$dir"/*.md "$dir"/*.toml "$dir"/*.json "$dir"/*.txt "$dir"/LICENSE-* "$dir/THIRD-PARTY-NOTICES"
  settle "$dir"
  local tarball=$OUT/$name.tar.gz
  tar --owner=0 --group=0 --numeric-owner --sort=name --format=gnu -C "$work" -cf - "$name" |
    gzip -9 -n >"$tarball"
  built+=("$tarball")
}

for arch in $ARCHES; do
  if wanted deb || wanted rpm || wanted tarball; then
    if [ -n "${BIN:-}" ]; then binary=$BIN; else binary=$(release_binary "$arch"); fi
    binary=$(stripped "$binary" "$arch")
  fi
  if wanted deb; then build_deb "$binary" "$arch"; fi
  if wanted rpm; then build_rpm "$binary" "$arch"; fi
  if wanted tarball; then build_tarball "$arch" "$binary"; fi
done

[ ${#built[@]} -gt 0 ] || fail "nothing was packaged (ONLY=$ONLY)"
# The sums of what this run built, not of older files left in OUT.
(cd "$OUT" && sha256sum -- "${built[@]##*/}" >SHA256SUMS)
printf '%s\n' "${built[@]}" "$OUT/SHA256SUMS"
