# Plastron make targets. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# they install the system packages and the .venv they need, then run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SYSTEM_PACKAGES := softhsm2 swtpm swtpm-tools libtss2-dev tpm2-tools opensc pkg-config gcc python3-dev \
	tpm2-openssl tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon
STAMP_SYS := .build/system-packages.stamp
STAMP_VENV := $(VENV)/.plastron-installed
# Every extra, so `make test` covers the HSM, TPM and database plugins (pyproject.toml).
EXTRAS := dev,hsm,tpm,cloud,k8s,postgres,mysql

.PHONY: all system-deps venv demo test test-fast lint typecheck proto bench clean

all: venv

$(STAMP_SYS):
	@mkdir -p .build
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

system-deps: $(STAMP_SYS)

$(STAMP_VENV): $(STAMP_SYS) pyproject.toml setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP_VENV)

proto: venv
	$(PY) plastron/proto/generate.py

lint: venv
	$(VENV)/bin/ruff check plastron server agent hsm tpm oidc tests bench swtpm-tests softhsm-conf tools
	$(VENV)/bin/ruff format --check plastron server agent hsm tpm oidc tests bench swtpm-tests softhsm-conf tools
	$(PY) tests/unit/test_layering.py

typecheck: venv
	$(PY) tools/typecheck.py

test: venv lint typecheck
	$(VENV)/bin/pytest -q -n 2 --dist loadfile tests

test-fast: venv
	$(VENV)/bin/pytest -q -n 2 tests/unit

demo: venv
	$(PY) tools/demo.py

bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf .build build *.egg-info
