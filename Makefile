# homehub: every target bootstraps what it needs on a fresh machine (Python + apt, nothing else).
#   make demo   the virtual home: emulated devices -> agent -> TLS broker -> reference receiver
#   make test   ruff, mypy --strict, pytest
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DBUSMOCK_VERSION := 0.34.3
DBUSMOCK_DIR := .cache/dbusmock-$(DBUSMOCK_VERSION)

.PHONY: all test lint typecheck unit-security pytest demo soak hil bench deps system-deps clean

all: test

$(STAMP): pyproject.toml constraints.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

deps: $(STAMP) system-deps

# mosquitto is the broker the tests and the demo start on loopback; softhsm2 the PKCS#11 token
# of the key-provider tests; each installed when missing.
system-deps:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
	  echo "installing mosquitto (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends mosquitto >/dev/null; \
	fi
	@if ! command -v openssl >/dev/null; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openssl >/dev/null; \
	fi
	@# SoftHSM2: the PKCS#11 token the key-provider tests run against (a TPM's path in the field).
	@if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then \
	  echo "installing softhsm2 (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends softhsm2 >/dev/null; \
	fi
	@if ! command -v systemd-analyze >/dev/null; then \
	  echo "installing systemd (apt-get): systemd-analyze rates the unit's hardening"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends systemd >/dev/null; \
	fi
	@# dbus-daemon and Debian's python3-dbusmock (run as /usr/bin/python3 -m dbusmock): the private
	@# system bus and the mocked BlueZ (bluez5 template) the pairing agent's tests run against.
	@if ! command -v dbus-daemon >/dev/null || ! /usr/bin/python3 -c 'import dbusmock' 2>/dev/null; then \
	  echo "installing dbus-daemon and python3-dbusmock (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends dbus-daemon python3-dbusmock >/dev/null; \
	fi
	@# PyPI's python-dbusmock, pinned, for its modemmanager template (Debian's 0.28 has none):
	@# pure Python, installed with the venv's pip into .cache/ and run by /usr/bin/python3 with
	@# PYTHONPATH (tests/dbus_modemmanager.py); installed beside, then moved, so a half install
	@# never counts as done.
	@if [ ! -f $(DBUSMOCK_DIR)/dbusmock/templates/modemmanager.py ]; then \
	  echo "installing python-dbusmock $(DBUSMOCK_VERSION) into $(DBUSMOCK_DIR) (pip)"; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  rm -rf $(DBUSMOCK_DIR).partial; \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(DBUSMOCK_DIR).partial python-dbusmock==$(DBUSMOCK_VERSION); \
	  rm -rf $(DBUSMOCK_DIR) && mv $(DBUSMOCK_DIR).partial $(DBUSMOCK_DIR); \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check agent drivers hil tests
	$(VENV)/bin/ruff format --check agent drivers hil tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy agent drivers

# issue 11: the unit's exposure, as systemd itself rates it, at most 1.5 (the threshold is x10).
unit-security: system-deps
	systemd-analyze security --offline=true --threshold=15 systemd/homehub.service | tail -n 1

pytest: deps
	$(VENV)/bin/pytest

test: deps lint typecheck unit-security pytest

demo: deps
	$(PY) -m hil.demo

soak: deps
	$(VENV)/bin/pytest -m soak tests

hil: deps
	$(PY) -m hil.campaign

bench: deps
	@for b in hil/bench/*.py; do echo "== $$b"; $(PY) -m hil.bench.$$(basename $$b .py); done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
