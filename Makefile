# nixcomply's single entry point. `make demo` and `make test` each install what they need
# (Debian packages when run as root, then a virtualenv in .venv) and are what CI runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest -c python/pyproject.toml --rootdir=.
APT_PACKAGES := python3 python3-venv nix-bin libsystemd-dev pkg-config git \
  openssh-server nftables iptables auditd chrony cryptsetup-bin restic borgbackup sudo kmod shellcheck \
  postgresql

.PHONY: all test fuzz lint demo render deps system-deps bench campaign clean

all: test

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (install them as root)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The Debian packages first (python3-venv among them), even under `make -j`.
$(VENV)/.installed: python/pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e 'python[test,systemd,server]'
	touch $@

deps: system-deps $(VENV)/.installed

# The test command (README, CI): unit tests, real-Nix and real-systemd integration tests,
# linters (ruff, mypy --strict), render freshness and .nix parsing all run inside pytest, one
# worker per core (pytest-xdist; a module's tests stay together, and the tests that change the
# machine's shared state take a lock: tests/conftest.py).
test: deps
	$(PYTEST) -n auto --dist loadfile tests

# The property tests with fresh random examples, many more of them (tests/fuzzing.py):
# CI runs them derandomized; run this before changing the evidence code, and paste a
# failure's @reproduce_failure line into the test. FUZZ_FACTOR scales the examples.
FUZZ_FACTOR ?= 20
fuzz: deps
	HYPOTHESIS_PROFILE=fuzz NIXCOMPLY_FUZZ_FACTOR=$(FUZZ_FACTOR) $(PYTEST) -n auto --dist loadfile tests -m property

lint: deps
	$(PYTEST) tests/test_linters.py

# Regenerate the committed, generated files (the tests fail while they are stale).
render: deps
	$(BIN)/nixcomply render baseline/hipaa-v1.yaml --nixos-release 26.05 -o modules/baselines/hipaa-v1.nix
	$(BIN)/nixcomply render baseline/hipaa-v1.yaml --nixos-release unstable -o modules/baselines/hipaa-v1.unstable.nix
	$(BIN)/nixcomply baseline schema -o baseline/baseline.schema.json
	$(BIN)/python tests/optionsdoc.py
	$(BIN)/python tests/clidoc.py

# The whole cycle on a sandbox host (render, switch, revert, verify); kept in .demo/ for a look.
demo: deps
	rm -rf .demo && $(BIN)/nixcomply demo --dir .demo

# The SIGKILL campaign at full width: every fault point over every revision that reaches it,
# and NIXCOMPLY_CAMPAIGN_TRIALS (default 40) random kills; `make test` runs a subset.
campaign: deps
	NIXCOMPLY_CAMPAIGN=1 $(PYTEST) tests/test_reconcile_faults.py

# Every bench prints its figures; a missed target fails the target at the end, not midway.
bench: deps
	@rc=0; for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || rc=1; done; exit $$rc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .demo
