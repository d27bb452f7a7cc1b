"""``homehub doctor``'s checks of the hub's links: the BLE adapter, the modem and SIM and the
registration, the clock's synchronization, the platform over TLS.

Each asks the real thing (BlueZ, timedated and ModemManager over D-Bus, the modem's AT port,
the broker over TCP and TLS), each bounded by its own timeout below the runner's. While the
daemon runs it holds the AT port (an exclusive lock) and a Bumble transport: the modem is then
read from the figures the daemon writes (agent/modem/state_file.py), and a Bumble transport is
not opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import stat
from typing import Any, Final

from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from agent.ble.bluez_agent import bluez_call
from agent.ble.bluez_devices import (
    ADAPTER_INTERFACE,
    DEFAULT_ADAPTER,
    PROPERTIES_INTERFACE,
    open_adapter,
)
from agent.ble.current_time import hub_clock_plausible
from agent.ble.stack import parse_stack
from agent.config import MqttConfig
from agent.errors import BleStackUnavailableError, HubError
from agent.modem import state_file
from agent.tech.doctor_probes import Context, off_loop
from agent.tech.doctor_report import CheckResult
from agent.tech.doctor_rules import clock_result, modem_results

BUMBLE_OPEN_TIMEOUT_S: Final = 5.0
MODEM_COMMAND_CAP_S: Final = 5.0
"""Bound on each AT command's wait: the figures are read-only commands that answer at once."""
MODEM_READ_TIMEOUT_S: Final = 30.0
DBUS_TIMEOUT_S: Final = 5.0
PLATFORM_TIMEOUT_S: Final = 10.0
"""DNS, TCP, the TLS handshake and the broker's answer, all within this."""
PROBE_CONNECT: Final = bytes.fromhex("100c00044d5154540702003c0000")
"""An MQTT CONNECT with protocol level 7, which no MQTT version has, an empty client id and
Clean Start. A broker answers it with CONNACK "unacceptable protocol version" (MQTT 3.1.1
return code 1, MQTT 5 reason 0x84) and closes, before it looks at a client id or a session:
the answer proves the broker took the TLS session with the hub's certificate, and the probe
can neither take over nor end the daemon's persistent session, as a real CONNECT would
(docs/doctor.md). A refused client certificate shows instead as the TLS alert (TLS 1.3 sends
it after the handshake) or the connection closed without an answer."""
CONNACK: Final = 0x20
TIMEDATE_SERVICE: Final = "org.freedesktop.timedate1"
TIMEDATE_PATH: Final = "/org/freedesktop/timedate1"
BLUETOOTH_FIX: Final = (
    "systemctl start bluetooth; check the adapter is there (bluetoothctl list, rfkill list)"
)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


# ---------------------------------------------------------------------------
# BLE
# ---------------------------------------------------------------------------


async def ble_adapter(ctx: Context) -> CheckResult:
    """BlueZ: the adapter exists and is powered. Bumble: the transport opens (not while the
    daemon holds it)."""
    check = "BLE adapter"
    spec = parse_stack(ctx.cfg.ble.stack)
    if spec.kind == "bluez":
        try:
            async with open_adapter() as adapter:
                (props,) = await bluez_call(
                    adapter.bus,
                    adapter.path,
                    PROPERTIES_INTERFACE,
                    "GetAll",
                    "s",
                    [ADAPTER_INTERFACE],
                )
        except BleStackUnavailableError as exc:
            return CheckResult.failed(check, exc.reason, BLUETOOTH_FIX)
        except (DBusError, TimeoutError) as exc:
            return CheckResult.failed(
                check, f"BlueZ did not answer ({type(exc).__name__})", BLUETOOTH_FIX
            )
        if _plain(props.get("Powered")) is not True:
            return CheckResult.failed(
                check,
                f"adapter {DEFAULT_ADAPTER} is powered off",
                "rfkill unblock bluetooth; bluetoothctl power on",
            )
        return CheckResult.passed(check, f"BlueZ adapter {DEFAULT_ADAPTER} present and powered")
    kind = spec.transport_kind
    if ctx.daemon_pid is not None:
        return CheckResult.skipped(check, f"the daemon holds the Bumble transport ({kind})")
    from bumble.transport import open_transport

    assert spec.transport is not None
    try:
        async with asyncio.timeout(BUMBLE_OPEN_TIMEOUT_S):
            transport = await open_transport(spec.transport)
            await transport.close()
    except Exception as exc:  # noqa: BLE001 - bumble raises OSError, TransportError, ValueError
        return CheckResult.failed(
            check,
            f"the Bumble transport ({kind}) did not open ({type(exc).__name__})",
            "check [ble] stack and that the controller (USB dongle, virtual radio) is there",
        )
    return CheckResult.passed(check, f"the Bumble transport ({kind}) opens")


# ---------------------------------------------------------------------------
# Modem
# ---------------------------------------------------------------------------


async def modem(ctx: Context) -> list[CheckResult]:
    """The SIM and the registration, from the module (AT port or ModemManager), or from the
    running daemon's figures."""
    cfg = ctx.cfg.modem
    sim_check, reg_check = "modem and SIM", "registration"
    if cfg.backend == "none":
        reason = 'no modem configured ([modem] backend = "none")'
        return [CheckResult.skipped(sim_check, reason), CheckResult.skipped(reg_check, reason)]
    figures: dict[str, Any]
    if cfg.backend == "at" and ctx.daemon_pid is not None:
        seen = state_file.read(ctx.cfg.hub.state_dir / state_file.STATE_FILE)
        if seen is None:
            reason = "the daemon holds the AT port and has written no figures yet"
            return [CheckResult.skipped(sim_check, reason), CheckResult.skipped(reg_check, reason)]
        figures, source = seen["figures"], f"the daemon's figures of {seen['as_of']}"
    elif cfg.backend == "at":
        assert cfg.port is not None  # enforced by agent.config
        try:
            mode = os.stat(cfg.port).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISCHR(mode):
            return [
                CheckResult.failed(
                    sim_check,
                    f"{cfg.port} is not there",
                    "check the module is plugged in and powered (lsusb; dmesg)",
                ),
                CheckResult.skipped(reg_check, "no modem (see the modem check)"),
            ]
        from agent.modem.manager import read_status

        try:
            async with asyncio.timeout(MODEM_READ_TIMEOUT_S):
                status = await read_status(
                    cfg.port, baudrate=cfg.baudrate, timeout_cap_s=MODEM_COMMAND_CAP_S
                )
        except (HubError, TimeoutError) as exc:
            return [
                CheckResult.failed(
                    sim_check,
                    f"the module does not answer on {cfg.port} ({_why(exc)})",
                    "power-cycle the module; check [modem] port is its AT port",
                ),
                CheckResult.skipped(reg_check, "no modem (see the modem check)"),
            ]
        figures, source = status.to_dict(), f"read on {cfg.port}"
    else:
        from agent.modem.modemmanager import open_modemmanager

        try:
            async with asyncio.timeout(MODEM_READ_TIMEOUT_S):
                async with open_modemmanager() as client:
                    snapshot = await client.snapshot()
        except (HubError, TimeoutError) as exc:
            return [
                CheckResult.failed(
                    sim_check,
                    _why(exc),
                    "systemctl start ModemManager; mmcli -L lists the modems it sees",
                ),
                CheckResult.skipped(reg_check, "no modem (see the modem check)"),
            ]
        figures, source = snapshot.figures(), "from ModemManager"
    return list(modem_results(figures, source, pin_file=cfg.pin_file))


def _why(exc: BaseException) -> str:
    """What an error says, for a finding: the hub's errors are written to be shown."""
    return str(exc) if isinstance(exc, HubError) else type(exc).__name__


# ---------------------------------------------------------------------------
# Clock
# ---------------------------------------------------------------------------


async def _timedate() -> dict[str, Any] | None:
    """timedated's properties over the system bus, or ``None`` when it cannot be asked."""
    try:
        async with asyncio.timeout(DBUS_TIMEOUT_S):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, TimeoutError, DBusFastError):
        return None
    try:
        (props,) = await bluez_call(
            bus,
            TIMEDATE_PATH,
            PROPERTIES_INTERFACE,
            "GetAll",
            "s",
            [TIMEDATE_SERVICE],
            destination=TIMEDATE_SERVICE,
            timeout_s=DBUS_TIMEOUT_S,
        )
        return {k: _plain(v) for k, v in dict(props).items()}
    except (DBusError, TimeoutError):
        return None
    finally:
        bus.disconnect()


async def clock(ctx: Context) -> CheckResult:
    """NTP synchronized (timedated's ``NTPSynchronized``), the clock plausible, and within
    tolerance of the network's time when the daemon recorded one (judged by
    :func:`~agent.tech.doctor_rules.clock_result`)."""
    seen = state_file.read(ctx.cfg.hub.state_dir / state_file.STATE_FILE)
    network_time = seen["figures"].get("network_time") if seen else None
    plausible = hub_clock_plausible()
    timedate = await _timedate() if plausible else None
    return clock_result(
        ctx.now,
        plausible=plausible,
        network_time=network_time if isinstance(network_time, str) else None,
        timedate=timedate,
    )


# ---------------------------------------------------------------------------
# Platform
# ---------------------------------------------------------------------------


def _tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    """As the uplink's (agent/uplink.py): the broker verified against our CA and its host
    name, our client certificate presented, TLS 1.2 at least."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(mqtt.ca_file))
    ctx.load_cert_chain(mqtt.cert_file, mqtt.key_file)
    return ctx


async def platform(ctx: Context) -> CheckResult:
    """A TLS handshake with the broker with the hub's certificate, then a probe that the
    broker took the session and speaks MQTT (see :data:`PROBE_CONNECT`)."""
    check = "platform reachable (TLS)"
    mqtt = ctx.cfg.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    try:  # off the loop: the files are read by OpenSSL, unbounded
        tls = await off_loop(lambda: _tls_context(mqtt), "doctor.tls_context")
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or "unusable"
        return CheckResult.failed(
            check,
            f"the CA, certificate or key cannot be loaded ({reason})",
            "see the key file and certificate checks",
        )
    try:
        async with asyncio.timeout(PLATFORM_TIMEOUT_S):
            try:
                await asyncio.get_running_loop().getaddrinfo(
                    mqtt.host, mqtt.port, type=socket.SOCK_STREAM
                )
            except socket.gaierror as exc:
                return CheckResult.failed(
                    check,
                    f"cannot resolve {mqtt.host} ({exc.strerror})",
                    "check [mqtt] host and the hub's DNS (resolvectl status)",
                )
            reader, writer = await asyncio.open_connection(
                mqtt.host, mqtt.port, ssl=tls, server_hostname=mqtt.host
            )
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                version = ssl_object.version() if ssl_object is not None else "TLS"
                writer.write(PROBE_CONNECT)
                await writer.drain()
                try:
                    answer = await reader.read(8)
                except (ConnectionResetError, BrokenPipeError):
                    answer = b""
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return CheckResult.failed(
            check,
            f"{where}: no answer within {PLATFORM_TIMEOUT_S:.0f} s",
            f"check the route to the platform (the modem's registration, a firewall on port"
            f" {mqtt.port})",
        )
    except ssl.SSLCertVerificationError as exc:
        return CheckResult.failed(
            check,
            f"{where}: the broker's certificate is not accepted ({exc.verify_message})",
            f"{mqtt.ca_file} must hold the CA that issued the broker's certificate;"
            " check the clock",
        )
    except ssl.SSLError as exc:
        return CheckResult.failed(
            check,
            f"{where}: the broker refused the hub's client certificate ({exc.reason})",
            "the platform must trust this hub's certificate: rotate or re-provision it",
        )
    except ConnectionRefusedError:
        return CheckResult.failed(
            check,
            f"{where} refused the connection: no broker listens there",
            "check [mqtt] host and port; ask the platform whether its broker is up",
        )
    except OSError as exc:
        return CheckResult.failed(
            check,
            f"{where}: cannot connect ({exc.strerror or type(exc).__name__})",
            "check the hub's network (cable, Wi-Fi, or the modem's registration)",
        )
    if answer[:1] != bytes([CONNACK]):
        return CheckResult.failed(
            check,
            f"{where}: the broker refused the hub's client certificate (it closed the"
            " connection after the TLS handshake without an MQTT answer)",
            "the platform must trust this hub's certificate: rotate or re-provision it",
        )
    return CheckResult.passed(
        check, f"{where}: {version}, the hub's certificate accepted, an MQTT broker answers"
    )
