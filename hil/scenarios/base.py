"""What a HIL scenario declares: its devices, its faults, what the platform must end up with.

A scenario is data plus one coroutine: :class:`Scenario` names the emulated devices of the
home (hil/scenarios/devices.py: cuffs, glucometers, oximeters, with their emulators'
quirks), the faults it injects (a line each, for the report), what it expects
(:class:`Expect`: readings exactly once are implied by the devices; security events,
readings from an impostor, unknown devices reported are said here), and ``drive``: what
happens during the run (a broker restart, a SIGKILL, a forged receipt), acting on the
running :class:`hil.scenarios.home.Home`. Everything else is the runner's
(hil/scenarios/runner.py), the same for every scenario: the dev PKI, mosquitto, the
reference platform, the virtual radio, ``homehub run``, the figures, and the platform-side
checks (hil/scenarios/checks.py).

The identities are synthetic and fresh for each run (:class:`RunIdentities`): the patient id,
serial numbers, full addresses and System IDs are the canaries the log scan looks for.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from drivers.device_information import SystemId
from hil.scenarios.devices import TIMEZONE, Device

if TYPE_CHECKING:
    from hil.scenarios.home import Home

HUB_ID: Final = "hub-hil-0001"

NEEDS: Final[Mapping[str, str]] = {
    "emulated_devices": "its devices are emulators the runner drives and whose readings it"
    " knows (implied by any device: every check compares the platform's readings with theirs)",
    "virtual_radio": "the Bumble virtual radio's own link: controllers taken off its LocalLink,"
    " the hub's virtual controller (Home.radio.link)",
    "modem_emulator": "the AT modem emulator (hil/emulators/modem.py) in place of the cellular"
    " module: SIM, signal, registration and USB faults on a pty",
    "real_modem": "a real cellular module on the agent's [modem] AT port",
    "power": "power cuts (Home.power_cut): the daemon killed and the links reset on the"
    " virtual home, the power relay on a rig",
    "proxy": "hil/faults' LoopbackProxy between the daemon and mosquitto (both on loopback)",
    "clock_wrapper": "the daemon run under hil.faults.clock_child (stepped wall clock)",
    "disk_limit": "a file-size limit or a tmpfs over the daemon's state (hil/faults/disk.py)",
}
"""The parts a scenario may need beyond the daemon, mosquitto and the reference platform
(:attr:`Scenario.needs`); a rig (hil/rig.py) says which it meets, the virtual home meets all."""

__all__ = [
    "HUB_ID",
    "NEEDS",
    "TIMEZONE",
    "Check",
    "Device",
    "Drive",
    "Expect",
    "RunIdentities",
    "Scenario",
    "Setup",
]


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: its name, whether it passed, one line of what was found (counts
    and names only: never a reading's value or an identifier)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class RunIdentities:
    """One run's synthetic patient: fresh random ids, so that a leak is the run's own."""

    patient_id: str
    tag: str
    """Four random hex digits that make each device's serial, address and System ID unique."""

    @classmethod
    def fresh(cls) -> RunIdentities:
        """New identities for one run."""
        tag = secrets.token_hex(2)
        return cls(patient_id=f"patient-hil-{secrets.token_hex(4)}", tag=tag)

    def address(self, index: int) -> str:
        """The full (random static) address of device ``index``: a canary."""
        tag = self.tag.upper()
        return f"F0:{tag[:2]}:{tag[2:]}:00:{0x10 + index:02X}:{0xA0 + index:02X}"

    def serial(self, index: int) -> str:
        """Device ``index``'s serial number: a canary."""
        return f"SN-HIL-{self.tag}-{index:02d}"

    def system_id(self, index: int) -> tuple[int, int]:
        """Device ``index``'s System ID (manufacturer identifier, OUI)."""
        return (0x0012FFFE00 | (int(self.tag, 16) & 0xFF) << 8 | index, 0xCA7A00)

    def eui64(self, index: int) -> str:
        """Device ``index``'s System ID as the hub's identifiers write it (16 hex digits)."""
        return SystemId(*self.system_id(index)).eui64.replace("-", "")


@dataclass(frozen=True, slots=True)
class Expect:
    """What the run must show besides every delivering device's readings exactly once.

    Attributes:
        security_checks: the ``check`` of each ``security`` event the daemon must log, as a
            multiset (``("forged", "wrong_key")``); no other security event may appear.
        unknown_devices: how many ``ble_unknown_device_seen`` reports the daemon must log
            (each unknown device is reported once per daemon life).
        platform_rejections: messages the platform must reject (failed verification).
        agent_exit_codes: what ``homehub run`` must exit with at the end (0: a clean stop).
    """

    security_checks: tuple[str, ...] = ()
    unknown_devices: int = 0
    platform_rejections: int = 0
    agent_exit_codes: tuple[int, ...] = (0,)


Drive = Callable[["Home"], Awaitable[None]]
Setup = Callable[["Home"], Awaitable[None]]
"""A scenario's own rig parts, started before the daemon's configuration is written: a
:class:`hil.faults.proxy.LoopbackProxy` in the MQTT path (:attr:`Home.mqtt_port`), the modem
emulator (:attr:`Home.config_overrides`), a clock or disk wrapper of the daemon's command
(:attr:`Home.agent_wrappers`). What it starts it hands to :attr:`Home.parts` (an
``AsyncExitStack``), closed after the daemon stopped."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scenario (see the module doc).

    Attributes:
        name: its command-line name (``python -m hil run NAME``).
        purpose: one line: what it shows.
        devices: the emulated devices of the home.
        faults: one line per fault it injects (for the report).
        expect: what else it expects.
        drive: what happens during the run, on the running home.
        quick: part of ``make test``'s quick subset.
        broker_persistence: mosquitto's ``persistence`` option.
        platform_receipts: whether the platform sends receipts from the start.
        receipt_timeout_s: the hub's ``mqtt.receipt_timeout_s``.
        timeout_s: the whole run's bound (drive and settling).
        setup: the scenario's own rig parts (:data:`Setup`), None for none.
        needs: the parts it needs (words of :data:`NEEDS`; ``emulated_devices`` is implied by
            any device); None: not declared, and so never run on a real rig (hil/rig.py).
    """

    name: str
    purpose: str
    devices: tuple[Device, ...]
    faults: tuple[str, ...]
    drive: Drive
    expect: Expect = Expect()
    quick: bool = False
    broker_persistence: bool = False
    platform_receipts: bool = True
    receipt_timeout_s: float = 60.0
    timeout_s: float = 120.0
    setup: Setup | None = None
    needs: frozenset[str] | None = None

    def __post_init__(self) -> None:
        unknown = sorted((self.needs or frozenset()) - NEEDS.keys())
        if unknown:
            raise ValueError(
                f"scenario {self.name}: needs {', '.join(unknown)} not known; "
                f"known: {', '.join(NEEDS)}"
            )

    @property
    def requirements(self) -> frozenset[str] | None:
        """What it needs, ``emulated_devices`` included when it has devices; None when
        undeclared."""
        if self.needs is None:
            return None
        return self.needs | ({"emulated_devices"} if self.devices else set())

    def device(self, label: str) -> Device:
        """The device with ``label``."""
        for device in self.devices:
            if device.label == label:
                return device
        raise KeyError(label)

    def index(self, label: str) -> int:
        """Device ``label``'s index (what its identities derive from)."""
        return [d.label for d in self.devices].index(label)
