"""The layers, as the import graph shows them, and every module importable on its own.

The contract (docs/architecture.md):

- ``drivers`` is a sans-I/O protocol package: it imports nothing of ``agent`` or ``hil``, and
  no I/O library (bleak, Bumble, paho, serial, sqlite3, asyncio).
- ``agent.normalize`` and the pipeline's pure modules import no BLE stack (bleak, Bumble).
- ``agent`` imports nothing of ``hil`` (the HIL kit never ships in the hub's package).
- A hub whose ``ble.stack`` is ``"bluez"`` never imports Bumble.

Each module is imported in a fresh interpreter, so a module that only works because another
one happened to be imported first fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[1]

_PROBE: Final = """
import importlib, json, sys
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""
"""Imports one module in a fresh interpreter and prints every module that import loaded."""


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _loaded_by(module: str) -> set[str]:
    """The modules importing ``module`` loads, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, f"import {module} failed:\n{result.stderr[-2000:]}"
    return set(json.loads(result.stdout))


def _top(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


# One fresh interpreter per module is slow-ish (≈ 0.2 s each); collect once per session.
_CACHE: dict[str, set[str]] = {}


def loaded_by(module: str) -> set[str]:
    """Cached :func:`_loaded_by`."""
    if module not in _CACHE:
        _CACHE[module] = _loaded_by(module)
    return _CACHE[module]


IO_LIBRARIES: Final = {"bleak", "bumble", "paho", "serial", "sqlite3", "asyncio", "socket"}
BLE_STACKS: Final = {"bleak", "bumble"}


@pytest.mark.parametrize("module", _modules("drivers"))
def test_drivers_import_nothing_of_agent_hil_or_io(module: str) -> None:
    """Every drivers module imports no agent, hil or I/O library."""
    assert set() == _top(loaded_by(module)) & ({"agent", "hil"} | IO_LIBRARIES)


@pytest.mark.parametrize(
    "module",
    [
        *_modules("agent/normalize"),
        "agent.measurement",
        "agent.ingest",
        "agent.payload",
        "agent.cose",
        "agent.errors",
        "agent.ble.uuids",
    ],
)
def test_pipeline_imports_no_ble_stack(module: str) -> None:
    """The normalizers, ingest and the value types import neither bleak nor Bumble."""
    assert set() == _top(loaded_by(module)) & BLE_STACKS


@pytest.mark.parametrize("module", _modules("agent"))
def test_agent_imports_nothing_of_hil(module: str) -> None:
    """No agent module needs the HIL kit; each imports in a fresh interpreter."""
    assert "hil" not in _top(loaded_by(module))


@pytest.mark.parametrize("module", _modules("hil"))
def test_hil_modules_import_on_their_own(module: str) -> None:
    """Every HIL module imports in a fresh interpreter."""
    loaded_by(module)


def test_daemon_and_cli_do_not_load_bumble() -> None:
    """The daemon and the command line load Bumble only when a bumble: stack is opened."""
    assert set() == _top(loaded_by("agent.daemon") | loaded_by("agent.cli")) & {"bumble"}


def test_hil_is_not_in_the_installed_package() -> None:
    """pyproject's package list ships agent and drivers, never hil."""
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.setuptools.packages.find]")
    section = text[start : text.index("\n\n", start)]
    assert "hil" not in section
    assert '"agent*"' in section
    assert '"drivers*"' in section
