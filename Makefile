# assume-roled: build, test, install, demo.
#
#   make test          installs the test tools into .venv (pinned moto, boto3, aws CLI), then
#                      runs every test; this is the README's test command and what CI runs.
#   make lint          formatting, clippy, the systemd unit checks and a build of the fuzz
#                      targets, as CI runs them.
#   make systemd-test  boots a real systemd (Debian in systemd-nspawn) and tests the installed
#                      service in it; slower, so it has its own target (CI runs it too).
#   make install       installs binary, unit, sysusers and tmpfiles entries, profile snippet and
#                      configuration; builds nothing (run `make` first, as yourself).
#   make package       the .deb, the .rpm and a static musl tarball with SHA256SUMS, in
#                      target/package/ (packaging/build.sh).
#   make soak          the full soak: 1,000,000 requests over 64 connections (make test runs
#                      200,000).
#   make fuzz          runs each cargo-fuzz target for FUZZ_SECONDS (default 60).
#   make bench         benchmarks against a bare baseline and today's practice, and per-user
#                      sessions for 1,000 users; appends to bench/results.md (takes about fifteen
#                      minutes; COLD_BUILD=0 skips the build).
#   make link-order    records the functions the release daemon runs (under callgrind, against
#                      moto) into bench/link-order.txt, which build.rs has lld lay out together:
#                      less idle memory. Run it when `make package` says the list is stale.
#   make demo          re-enacts the cross-account scenario offline, against moto.
#   make mutants       mutation testing (cargo-mutants) of the modules that decide, against the
#                      unit tests (.cargo/mutants.toml); slow (see the README), not in CI. With
#                      MUTANTS_ARGS=--iterate it tests only what the last run did not catch.

# The system's Python where there is one: the test tools in .venv are also run as other users
# (tests/users.rs, tests/guard.rs), who cannot execute an interpreter under root's home.
PYTHON  ?= $(firstword $(wildcard /usr/bin/python3) python3)
CARGO   ?= cargo
VENV    := .venv

PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR  ?= /etc
# Where the commented example configuration goes (packages: the documentation directory).
EXAMPLEDIR  ?= $(SYSCONFDIR)/assume-roled
# Whether `make install` enables the socket unit (packages enable it from their scripts).
ENABLE      ?= yes
# The binary to install (`make` builds it).
BIN         ?= target/release/assume-roled
# systemd-analyze security's exposure score, in tenths, that the unit must not exceed.
EXPOSURE_LIMIT := 15
# The same for the guard's unit (measured 1.9): root with CAP_NET_ADMIN, which the score counts.
GUARD_EXPOSURE_LIMIT := 20

.PHONY: all build test lint check-unit fuzz-build systemd-test install package package-test bench link-order soak fuzz demo mutants venv clean

all: build

build:
	$(CARGO) build --release

# The virtualenv is rebuilt only when the pinned requirements change.
$(VENV)/.installed: tests/requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

# Examples are real SDK clients the integration tests run; `cargo test` alone does not leave
# them in target/debug/examples.
test: venv
	$(CARGO) build --examples
	$(CARGO) test --all-targets

lint: venv check-unit fuzz-build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	@# Every crate in the binary under a licence compatible with MIT OR Apache-2.0.
	$(PYTHON) scripts/licences.py check
	@# deploy/: the CloudFormation templates, the alert rules and each alert's unit test.
	$(VENV)/bin/cfn-lint deploy/cloudformation/*.yaml
	promtool check rules deploy/prometheus/assume-roled.rules.yml
	cd deploy/prometheus && promtool test rules assume-roled.rules.test.yml

# The fuzz targets, built as plain binaries (no sanitizer, stable toolchain) in the project's
# own target directory, so that a change that breaks them fails CI; `make fuzz` runs them.
fuzz-build:
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --manifest-path fuzz/Cargo.toml --bins

# `systemd-analyze verify` only warns (exit 0) on unknown keys and typos, so any output on
# stderr fails the check. The unit is checked as installed, with @BINDIR@ filled in.
check-unit:
	$(CARGO) build --quiet
	rm -rf target/unit-check && mkdir -p target/unit-check
	for unit in assume-roled.service assume-roled-guard.service; do \
	  sed 's|@BINDIR@|$(CURDIR)/target/debug|' systemd/$$unit > target/unit-check/$$unit || exit 1; done
	cp systemd/assume-roled.socket systemd/assume-roled-containers.socket target/unit-check/
	cd target/unit-check && systemd-analyze verify assume-roled.service assume-roled-guard.service \
	  assume-roled.socket assume-roled-containers.socket 2> verify.err; \
	  status=$$?; cat verify.err; test $$status -eq 0 && test ! -s verify.err
	cd target/unit-check && systemd-analyze security --offline=yes --threshold=$(EXPOSURE_LIMIT) \
	  --no-pager assume-roled.service > security.txt; status=$$?; tail -n 1 security.txt; exit $$status
	cd target/unit-check && systemd-analyze security --offline=yes --threshold=$(GUARD_EXPOSURE_LIMIT) \
	  --no-pager assume-roled-guard.service > guard-security.txt; status=$$?; \
	  tail -n 1 guard-security.txt; exit $$status

systemd-test: venv
	$(CARGO) build
	tests/systemd/run.sh

# Nothing is built here: `make` builds as the calling user, then `sudo make install` only
# copies (a build run as root would run every build script as root).
install:
	@test -x $(BIN) || { echo "$(BIN) is missing: run make (as yourself) first" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/assume-roled
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|' systemd/assume-roled.service > $(DESTDIR)$(UNITDIR)/assume-roled.service
	sed 's|@BINDIR@|$(BINDIR)|' systemd/assume-roled-guard.service > $(DESTDIR)$(UNITDIR)/assume-roled-guard.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/assume-roled.service $(DESTDIR)$(UNITDIR)/assume-roled-guard.service
	install -m 0644 systemd/assume-roled.socket $(DESTDIR)$(UNITDIR)/assume-roled.socket
	@# Not enabled: only for hosts that serve containers ([containers]).
	install -m 0644 systemd/assume-roled-containers.socket $(DESTDIR)$(UNITDIR)/assume-roled-containers.socket
	install -D -m 0644 systemd/assume-roled.sysusers $(DESTDIR)$(SYSUSERSDIR)/assume-roled.conf
	install -D -m 0644 systemd/assume-roled.tmpfiles $(DESTDIR)$(TMPFILESDIR)/assume-roled.conf
	install -D -m 0644 systemd/profile.sh $(DESTDIR)$(SYSCONFDIR)/profile.d/assume-roled.sh
	install -D -m 0644 config.example.toml $(DESTDIR)$(EXAMPLEDIR)/config.example.toml
	install -D -m 0644 session-policy.example.json $(DESTDIR)$(EXAMPLEDIR)/session-policy.example.json
	@# An existing configuration is never overwritten. It is the daemon's group's to read, not
	@# everyone's (external ids, exempt users): systemd-tmpfiles gives it to group assume-roled
	@# once systemd-sysusers has made the group (the README's install steps; and at every boot).
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/assume-roled
	test -e $(DESTDIR)$(SYSCONFDIR)/assume-roled/config.toml || \
	  install -m 0640 systemd/config.toml $(DESTDIR)$(SYSCONFDIR)/assume-roled/config.toml
ifeq ($(ENABLE),yes)
	@# The socket is enabled (what `systemctl enable` does), so that systemd holds the port
	@# from the next boot on; `systemctl start assume-roled.socket` holds it at once. Packages
	@# enable it from their maintainer scripts instead (ENABLE=no).
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/systemd/system/sockets.target.wants
	ln -sf $(UNITDIR)/assume-roled.socket $(DESTDIR)$(SYSCONFDIR)/systemd/system/sockets.target.wants/assume-roled.socket
	@# The metadata guard's watch, from early boot on (it idles when no guard is configured).
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/systemd/system/sysinit.target.wants
	ln -sf $(UNITDIR)/assume-roled-guard.service $(DESTDIR)$(SYSCONFDIR)/systemd/system/sysinit.target.wants/assume-roled-guard.service
endif

# The .debs, the .rpms and the tarballs for x86_64 and aarch64, with SHA256SUMS, in
# target/package/.
package:
	packaging/build.sh

# What `make package` wrote, checked: lintian and rpmlint, licences and notices, the aarch64
# binary serving under emulation, and a second clone's build byte for byte (tests/packages).
package-test: venv
	tests/packages/run.sh

bench: venv
	bench/run.sh
	bench/sessions.sh

link-order: venv
	bench/link-order.sh make

FUZZ_SECONDS ?= 60
# cargo-fuzz passes nightly-only sanitizer flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run config -- -max_total_time=$(FUZZ_SECONDS)
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run request -- -max_total_time=$(FUZZ_SECONDS)

MUTANTS_ARGS ?=
mutants:
	command -v cargo-mutants >/dev/null || $(CARGO) install --locked cargo-mutants@27.1.0
	$(CARGO) mutants --no-shuffle -j 1 $(MUTANTS_ARGS)

soak: venv
	SOAK_REQUESTS=1000000 $(CARGO) test --test soak -- --nocapture

demo: venv
	$(CARGO) build --quiet
	scripts/demo.sh

clean:
	rm -rf $(VENV)
	$(CARGO) clean
