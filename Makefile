# homehub: every target bootstraps what it needs on a fresh machine (Python + apt, nothing else).
#   make demo   the virtual home: emulated devices -> agent -> TLS broker -> reference receiver
#   make test   ruff, mypy --strict, pytest
#   make install / uninstall   the agent into / (or DESTDIR=), docs/install.md
#   make deb    the Debian package (dist/); make sbom: its CycloneDX bill of materials
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DBUSMOCK_VERSION := 0.34.3
DBUSMOCK_DIR := .cache/dbusmock-$(DBUSMOCK_VERSION)

.PHONY: all test lint typecheck unit-security pytest demo soak hil bench deps system-deps clean \
	install uninstall deb sbom stage

# Packaging (issue 11, docs/install.md). The hub's venv is made from the versioned system
# interpreter (/usr/bin/python3.11 on bookworm), not from python3: a later default python3
# must not pull the ground from under it, and the package depends on exactly that version.
HUB_PYTHON ?= $(shell readlink -f /usr/bin/python3)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The pinned runtime dependencies as wheels, built once per pyproject/constraints change, so
# installs and packages are offline and repeatable; the build backend (setuptools, pinned here
# as the build needs >= 68) beside them, for building our own wheel without the index.
SETUPTOOLS_VERSION := 80.9.0
# Resolved by pip running as HUB_PYTHON (pip --python), so the wheels fit the interpreter the
# venv is made from even where the build venv's python differs; one wheelhouse per interpreter.
WHEELHOUSE := .cache/wheelhouse-$(notdir $(HUB_PYTHON))
HOUSE_STAMP := $(WHEELHOUSE)/.complete
WHEEL := build/wheel/homehub-$(VERSION)-py3-none-any.whl
PROJECT_SOURCES := $(shell find agent drivers -type f -not -path '*/__pycache__/*' 2>/dev/null) \
	pyproject.toml
STAGE := build/deb/root
DEB := dist/homehub_$(VERSION)_$(shell dpkg --print-architecture 2>/dev/null || echo unknown).deb
# dpkg-deb compression: xz as Debian does, the package crosses a metered cellular link
# ("-Zgzip -z1" builds in a tenth of the time, for tests).
DEB_COMPRESS ?= -Zxz
CYCLONEDX_VERSION := 7.5.0
CYCLONEDX_VENV := .cache/cyclonedx-$(CYCLONEDX_VERSION)
SBOM := dist/homehub-$(VERSION).cdx.json
# Whose environment `make sbom` describes: the venv `make deb` ships, staged under build/.
SBOM_PYTHON ?= $(STAGE)/opt/homehub/.venv/bin/python
# The last venv built is kept under .cache/venv: an install or a package whose wheels did not
# change copies it (under a second) instead of building it again (a few seconds).
INSTALL_ARGS = --python $(HUB_PYTHON) --pip-python $(PY) --wheelhouse $(WHEELHOUSE) \
	--wheel $(WHEEL) --venv-cache .cache/venv

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
	@# chromium: the headless browser that renders the HIL report in its test (tests/test_hil_report.py).
	@if ! command -v chromium >/dev/null; then \
	  echo "installing chromium (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
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
	$(VENV)/bin/ruff check agent drivers hil tests packaging
	$(VENV)/bin/ruff format --check agent drivers hil tests packaging

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

# issue 12: every HIL scenario (hil/scenarios/) on the virtual home, the real daemon each
# time, then the fleet (hil/fleet/: 200 hubs, a broker restart); the report (junit.xml,
# report.html with its plots, results.json) in HIL_REPORT. Within 30 minutes.
# RIG=FILE: on the real rig FILE describes instead, without the fleet (hil/README.md, "Real rig").
HIL_REPORT ?= build/hil-report
hil: deps
	timeout 1800 $(PY) -m hil.campaign --report $(HIL_REPORT)$(if $(RIG), --rig '$(RIG)')

bench: deps
	@for b in hil/bench/*.py; do echo "== $$b"; $(PY) -m hil.bench.$$(basename $$b .py); done

# pip only (pip wheel, pip --python): building and installing need none of the dev tools.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(HOUSE_STAMP): pyproject.toml constraints.txt | $(PY)
	rm -rf $(WHEELHOUSE).partial
	$(PY) -m pip --python $(HUB_PYTHON) wheel --quiet --disable-pip-version-check \
	  -c constraints.txt --wheel-dir $(WHEELHOUSE).partial .
	rm -f $(WHEELHOUSE).partial/homehub-*.whl
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps \
	  --wheel-dir $(WHEELHOUSE).partial/build-backend setuptools==$(SETUPTOOLS_VERSION)
	touch $(WHEELHOUSE).partial/.complete
	rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).partial $(WHEELHOUSE)

# Our wheel, from the sources as they are (not editable). setuptools reuses build/lib, where a
# module deleted from the tree would live on: cleared first.
$(WHEEL): $(PROJECT_SOURCES) $(HOUSE_STAMP)
	rm -rf build/lib build/bdist.* build/wheel
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps --no-index \
	  --find-links $(WHEELHOUSE)/build-backend --wheel-dir build/wheel .
	@test -f $@

# Into / it takes root ($(SUDO)); into a DESTDIR it does not. The venv is made with
# --without-pip, which Debian's python3 allows without python3-venv (ensurepip).
install: $(HOUSE_STAMP) $(WHEEL)
	$(if $(DESTDIR),,$(SUDO)) $(HUB_PYTHON) packaging/install.py install \
	  --destdir '$(DESTDIR)' $(INSTALL_ARGS)

# Keeps /etc/homehub (configuration, keys) and /var/lib/homehub (unsent readings) unless
# PURGE=yes; never removes the user.
uninstall:
	$(if $(DESTDIR),,$(SUDO)) $(HUB_PYTHON) packaging/install.py uninstall --destdir '$(DESTDIR)' \
	  $(if $(filter yes,$(PURGE)),--purge)

# The package's tree: what `make install` puts, less /etc/homehub/homehub.toml (the postinst
# creates it only when absent: a conffile would stall unattended upgrades on every hub whose
# configuration was provisioned). Everything but the venv is laid out afresh; the venv is
# rebuilt only when its wheels change.
stage: $(HOUSE_STAMP) $(WHEEL)
	mkdir -p $(STAGE)
	find $(STAGE) -mindepth 1 -maxdepth 1 -not -name opt -exec rm -rf {} +
	$(HUB_PYTHON) packaging/install.py install --destdir $(STAGE) --no-config $(INSTALL_ARGS)

$(CYCLONEDX_VENV)/.installed: packaging/sbom-tool-constraints.txt
	rm -rf $(CYCLONEDX_VENV)
	$(PYTHON) -m venv $(CYCLONEDX_VENV)
	$(CYCLONEDX_VENV)/bin/pip install --quiet --disable-pip-version-check \
	  -c packaging/sbom-tool-constraints.txt cyclonedx-bom==$(CYCLONEDX_VERSION) \
	  'cyclonedx-python-lib[json-validation]'
	touch $@

# The CycloneDX 1.6 SBOM of the shipped environment, validated against the schema (strictly,
# once: by sbom_check, not also by cyclonedx-py) and checked to list every pin of
# constraints.txt the environment holds (packaging/sbom_check.py).
sbom: $(CYCLONEDX_VENV)/.installed $(if $(filter $(STAGE)/%,$(SBOM_PYTHON)),stage)
	mkdir -p $(dir $(SBOM))
	$(CYCLONEDX_VENV)/bin/cyclonedx-py environment --spec-version 1.6 --output-format JSON \
	  --output-reproducible --pyproject pyproject.toml --mc-type application --no-validate \
	  --output-file $(SBOM).partial $(SBOM_PYTHON)
	$(CYCLONEDX_VENV)/bin/python packaging/sbom_check.py $(SBOM).partial \
	  --python $(SBOM_PYTHON) --constraints constraints.txt
	mv $(SBOM).partial $(SBOM)

# dpkg-deb --build of the staged tree, with the SBOM inside (/usr/share/doc/homehub).
deb: sbom
	packaging/build-deb.sh $(STAGE) $(DEB) $(VERSION) $(HUB_PYTHON) $(SBOM) '$(DEB_COMPRESS)'

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
