"""Shared fixtures: a per-run dev PKI and a real mosquitto over TLS (hil/pki.py, hil/broker.py).

The PHI canary plugin (tests/phi_canaries.py, loaded by pyproject's addopts) scans the broker
logs written here, and every private key generated here is planted as a canary, so a key that
ends up in any log fails the suite.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.ble.stack import BleStack
from agent.uplink import UplinkSettings
from hil.broker import Broker
from hil.emulators.glucometer import Glucometer, GlucoseRecord
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki, make_dev_pki
from hil.receiver import Receiver
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.outbox_helpers import box, clock, db_path, sealer  # noqa: F401 - fixtures
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL

HUB_ID: Final = "hub-0001"
SUBSCRIBE_TIMEOUT_S: Final = 10.0
"""The receiver subscribes within milliseconds; paho's first reconnect waits 1 s at most."""


def _plant_keys(pki: DevPki, label: str) -> None:
    """Every private key of ``pki`` becomes a canary: its scalar and each line of its PEM."""
    for path in (pki.ca_key, pki.server_key, pki.hub_key, pki.receiver_key, pki.platform_key):
        pem = path.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        name = f"{label} {path.name}"
        phi_canaries.plant(f"{name} scalar", f"{key.private_numbers().private_value:064x}")
        for i, line in enumerate(pem.decode().splitlines()):
            if len(line) >= 40 and not line.startswith("-----"):
                phi_canaries.plant(f"{name} PEM line {i}", line)


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """One CA, broker certificate, hub ``hub-0001`` and receiver for the whole session."""
    pki = make_dev_pki(tmp_path_factory.mktemp("pki"), HUB_ID)
    _plant_keys(pki, "dev")
    return pki


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """An unrelated CA with a hub of the same id: nothing it issued may be trusted."""
    pki = make_dev_pki(tmp_path_factory.mktemp("foreign-pki"), HUB_ID)
    _plant_keys(pki, "foreign")
    return pki


def _log_path(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    return phi_canaries.log_dir() / f"{name}.mosquitto.log"


@pytest.fixture
def broker(dev_pki: DevPki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A running mosquitto (TLS, client certificates, ACL; persistence off), closed after."""
    with Broker(dev_pki, tmp_path / "broker", log_path=_log_path(request)) as running:
        yield running


@pytest.fixture
def persistent_broker(
    dev_pki: DevPki, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Broker]:
    """Like ``broker`` but with persistence on: sessions survive a graceful restart."""
    with Broker(
        dev_pki, tmp_path / "broker", persistence=True, log_path=_log_path(request)
    ) as running:
        yield running


@pytest.fixture
async def receiver(dev_pki: DevPki, broker: Broker) -> AsyncIterator[Receiver]:
    """The reference receiver, subscribed to ``broker``."""
    async with Receiver.for_dev_pki(dev_pki, broker.port) as running:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await running.subscribed.wait()
        yield running


@pytest.fixture
async def radio() -> AsyncIterator[VirtualRadio]:
    """A virtual radio serving the hub's controller on a free loopback port."""
    async with VirtualRadio() as radio:
        yield radio


@pytest.fixture
async def ble(radio: VirtualRadio) -> AsyncIterator[BleStack]:
    """The agent's stack opened from its configuration string, as the daemon does."""
    async with BleStack.open(radio.stack) as stack:
        yield stack


METER_INFO: Final = DeviceInformation(
    model_number="HH-GLU-1", serial_number=DEVICE_SERIAL, system_id=(0x12FFFE34F0, 0xCA7A00)
)
"""What an emulated glucometer's DIS exposes (its serial and System ID are PHI canaries)."""

MeterFactory = Callable[..., Awaitable[Glucometer]]


@pytest.fixture
async def meter(radio: VirtualRadio) -> AsyncIterator[MeterFactory]:
    """Starts a glucometer on the radio (stopped at the end)."""
    started: list[Glucometer] = []

    async def start(records: list[GlucoseRecord], **options: Any) -> Glucometer:
        device = await radio.add_peripheral_device(DEVICE_ADDRESS, "glucometer")
        glucometer = Glucometer(device, records, info=METER_INFO, **options)
        await glucometer.start()
        started.append(glucometer)
        return glucometer

    yield start
    for glucometer in started:
        await glucometer.stop()


def uplink_settings(pki: DevPki, port: int, **override: Any) -> UplinkSettings:
    """The hub's uplink to a test broker on loopback, with test-sized backoffs (overridable)."""
    values: dict[str, Any] = {
        "hub_id": HUB_ID,
        "host": "127.0.0.1",
        "port": port,
        "ca_file": pki.ca_cert,
        "cert_file": pki.hub_cert,
        "key_file": pki.hub_key,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
        "refusal_backoff_s": 0.5,
        "refusal_backoff_max_s": 1.0,
    }
    values.update(override)
    return UplinkSettings(**values)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that run ``agent.cli.main`` in-process: it configures logging on the stderr
    of the moment (a capture closed after the test); the suite's logging is set back as it
    was."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
