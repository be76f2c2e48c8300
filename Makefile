# assume-roled: build, test, demo.
#
#   make test   installs the test tools into .venv (pinned moto, boto3, aws CLI), then runs
#               every test; this is what CI runs.
#   make demo   re-enacts the cross-account scenario offline, against moto.
#   make lint   formatting and clippy, as CI checks them.

PYTHON ?= python3
VENV   := .venv
CARGO  ?= cargo

.PHONY: all build test lint demo venv clean

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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: venv
	$(CARGO) build --quiet
	scripts/demo.sh

clean:
	rm -rf $(VENV)
	$(CARGO) clean
