"""``homehub pair`` and ``homehub devices``, the real command in a subprocess on a
pseudo-terminal, against emulated devices on the virtual radio (Bumble stack).

The technician's part is played by the test: it reads the table and the questions from the
terminal, picks the row, and types the passkey the emulated glucometer displays.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import stat
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import structlog

from agent import cli, config
from agent.ble.identity import identity_pin
from agent.ble.sessions import SESSIONS
from agent.ble.stack import BONDS_FILE, BleStack, first_contact_pairing
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from hil.emulators.glucometer import Glucometer, example_records
from hil.emulators.pairing import EmulatedPairing
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.pairing_home import PAIR_WAIT_S, SCAN_S, homehub, pair_by_terminal, start_meter
from tests.phi_canaries import DEVICE_ADDRESS, DEVICE_SERIAL, SYSTEM_ID_HEX

CONFIG_TEXT: Final = """\
# A hub in the virtual home (comments must survive every edit).
[hub]
id = "hub-0001"
timezone = "Europe/Berlin"
state_dir = "{state}"

[patient]
id = "patient-0001"

[ble]
stack = "{stack}"                # the virtual radio
scan_timeout_s = 5.0
connect_timeout_s = 10.0
quiet_period_s = 1.0
session_timeout_s = 30.0
cycle_interval_s = 1.0

# The allowlist: `homehub pair` adds entries here.

[outbox]
path = "{state}/outbox.db"
key_file = "{tmp}/data.key"

[signing]
key_file = "{tmp}/signing.pem"

[mqtt]
host = "127.0.0.1"
ca_file = "ca.crt"
cert_file = "hub.crt"
key_file = "hub.key"
"""


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``cli.main`` configures logging for its process (on the stderr of the moment: a
    capture closed after the test); the suite's logging is set back as it was."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def write_config(tmp_path: Path, stack: str) -> Path:
    """A configuration with no device yet, its state under ``tmp_path`` (mode 0640)."""
    path = tmp_path / "homehub.toml"
    path.write_text(CONFIG_TEXT.format(state=tmp_path / "state", stack=stack, tmp=tmp_path))
    path.chmod(0o640)
    return path


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m agent ARGS`` without a terminal: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(PAIR_WAIT_S):
        out, err = await process.communicate()
    phi_canaries.record_output(f"run_cli {args[0]}: stdout", out)
    phi_canaries.record_output(f"run_cli {args[0]}: stderr", err)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def expected_pin() -> str:
    """The identity pin of the emulated meter's DIS (tests/conftest.py METER_INFO)."""
    facts = DeviceFacts(
        address=DEVICE_ADDRESS,
        manufacturer="Homehub Test Devices",
        model="HH-GLU-1",
        serial=DEVICE_SERIAL,
        system_id=SYSTEM_ID_HEX,
    )
    pin = identity_pin(facts)
    assert pin is not None
    return pin


async def sync_after_restart(cfg_path: Path, meter: Glucometer) -> list[RawMeasurement]:
    """A fresh stack on the persisted bonds with the daemon's policy runs the glucose
    session of the paired meter, as the restarted daemon does."""
    cfg = config.load(cfg_path)
    (device,) = cfg.devices
    received: list[RawMeasurement] = []

    async def on_measurement(raw: RawMeasurement, _facts: DeviceFacts) -> None:
        received.append(raw)

    async with BleStack.open(
        cfg.ble.stack,
        bonds_path=cfg.hub.state_dir / BONDS_FILE,
        may_pair=first_contact_pairing(cfg.devices),
    ) as ble:
        await SESSIONS["glucose"](ble, device, on_measurement, cfg.ble, lambda _key: None)
    return received


class TestPairPasskey:
    """The passkey glucometer, paired by a technician at a terminal."""

    async def test_typed_passkey_bonds_and_the_meter_syncs_after_a_restart(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """The passkey the meter displays is typed at the terminal; the meter is added to
        the allow-list (required, identity pinned, comments kept, mode kept); a fresh stack
        on the persisted bonds then syncs every record over an encrypted link without a
        second pairing."""
        pairing = EmulatedPairing.passkey_display()
        meter = await start_meter(radio, pairing, require_encryption=True)
        cfg_path = write_config(tmp_path, radio.stack)

        code, text = await pair_by_terminal(radio, cfg_path, pairing, "<passkey>")

        assert 0 == code, text
        assert "as 'glucose'" in text
        assert "passkey entry" in text
        assert DEVICE_ADDRESS not in text
        assert 1 == meter.pairings
        written = cfg_path.read_text()
        assert "# A hub in the virtual home (comments must survive every edit)." in written
        assert "# The allowlist: `homehub pair` adds entries here." in written
        assert 0o640 == stat.S_IMODE(cfg_path.stat().st_mode)
        assert [
            {
                "kind": "glucose",
                "address": DEVICE_ADDRESS,
                "label": "glucose",
                "pairing": "required",
                "identity": expected_pin(),
            }
        ] == tomllib.loads(written)["devices"]
        bonds = tmp_path / "state" / BONDS_FILE
        assert 0o600 == stat.S_IMODE(bonds.stat().st_mode)

        received = await sync_after_restart(cfg_path, meter)

        assert len(example_records()) == len(received)
        assert all("2a18" in r.characteristic_uuid for r in received)
        assert 1 == meter.pairings  # no pairing again
        assert [] == meter.pairing_failures

    async def test_refused_passkey_leaves_nothing(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """An empty answer refuses the passkey: exit 1, the allow-list unchanged, no bond."""
        pairing = EmulatedPairing.passkey_display()
        meter = await start_meter(radio, pairing)
        cfg_path = write_config(tmp_path, radio.stack)
        before = cfg_path.read_bytes()
        async with homehub("pair", "--config", str(cfg_path), "--scan-s", SCAN_S) as terminal:
            await terminal.expect("Pair which device? [1-1] ")
            terminal.type("1")
            await terminal.expect("Type the 6-digit passkey")
            terminal.type("")
            code = await terminal.exit_code()
        assert 1 == code, terminal.text
        assert "pairing check failed: declined (passkey)" in terminal.text
        assert before == cfg_path.read_bytes()
        assert 0 == meter.pairings
        bonds = tmp_path / "state" / BONDS_FILE
        assert not bonds.exists() or DEVICE_ADDRESS not in bonds.read_text()


class TestPairNumericComparison:
    """LE Secure Connections numeric comparison, confirmed or not at the terminal."""

    @pytest.mark.parametrize(("answer", "paired"), [("y", True), ("n", False)])
    async def test_yes_bonds_no_refuses(
        self, radio: VirtualRadio, tmp_path: Path, answer: str, paired: bool
    ) -> None:
        """'y' to the number both sides show bonds (and the meter showed the same number);
        'n' refuses: exit 1, nothing in the allow-list."""
        pairing = EmulatedPairing.numeric_comparison()
        meter = await start_meter(radio, pairing)
        cfg_path = write_config(tmp_path, radio.stack)
        code, text = await pair_by_terminal(radio, cfg_path, pairing, answer)
        (shown,) = pairing.compared
        assert f"show {shown:06d}?" in text
        devices = config.load(cfg_path).devices
        if paired:
            assert (0, 1, ["glucose"]) == (code, meter.pairings, [d.label for d in devices])
            assert "numeric comparison" in text
        else:
            assert (1, 0, []) == (code, meter.pairings, list(devices))
            assert "pairing check failed: declined (confirmation)" in text


class TestPairChoice:
    """What the scan shows, and picking."""

    async def test_json_result_by_address_and_not_in_pairing_mode(
        self, radio: VirtualRadio, tmp_path: Path
    ) -> None:
        """--address picks without a question, --json prints the result (shortened
        address only); a second meter not in pairing mode is never listed."""
        await start_meter(radio, EmulatedPairing.just_works())
        await start_meter(
            radio, EmulatedPairing.just_works(pairing_mode=False), address="F0:CA:7A:00:99:01"
        )
        cfg_path = write_config(tmp_path, radio.stack)
        code, out, err = await run_cli(
            "pair",
            "--config",
            str(cfg_path),
            "--scan-s",
            SCAN_S,
            "--address",
            DEVICE_ADDRESS.lower(),
            "--label",
            "kitchen-meter",
            "--json",
        )
        assert 0 == code, err
        result = json.loads(out)
        assert {
            "label": "kitchen-meter",
            "kind": "glucose",
            "device": "..:12:34",
            "pairing": "required",
            "method": "just_works",
            "identity_pinned": True,
            "config": str(cfg_path),
        } == result
        assert "..:99:01" not in err
        assert DEVICE_ADDRESS not in out + err

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("--address", "F0:00:00:00:20"), "--address: must be a Bluetooth address"),
            (("--address", "f0:00:00:00:20:01"), "already on the allow-list as 'meter'"),
            (("--label", "meter"), "'meter' is already used"),
            (("--scan-s", "0"), "--scan-s: must be > 0"),
        ],
    )
    def test_bad_arguments_before_any_radio(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        args: tuple[str, ...],
        message: str,
    ) -> None:
        """Bad arguments are refused with exit 2 before the stack is opened (this radio
        does not exist)."""
        cfg_path = with_devices(
            tmp_path,
            "bumble:tcp-client:127.0.0.1:9",
            [{"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter"}],
        )
        code = cli.main(["pair", "--config", str(cfg_path), *args])
        err = capsys.readouterr().err
        assert 2 == code
        assert message in err

    async def test_nothing_in_pairing_mode(self, radio: VirtualRadio, tmp_path: Path) -> None:
        """No device in pairing mode: exit 2 with one line saying so; nothing written."""
        await start_meter(radio, EmulatedPairing.just_works(pairing_mode=False))
        cfg_path = write_config(tmp_path, radio.stack)
        before = cfg_path.read_bytes()
        code, _out, err = await run_cli("pair", "--config", str(cfg_path), "--scan-s", "0.5")
        assert 2 == code
        assert "no health device in pairing mode found" in err
        assert before == cfg_path.read_bytes()


# ---------------------------------------------------------------------------------------
# homehub devices
# ---------------------------------------------------------------------------------------


def with_devices(tmp_path: Path, stack: str, devices: list[dict[str, Any]]) -> Path:
    """A configuration with ``devices`` appended as [[devices]] tables."""
    path = write_config(tmp_path, stack)
    tables = "".join(
        "\n[[devices]]\n" + "".join(f'{k} = "{v}"\n' for k, v in d.items()) for d in devices
    )
    path.write_text(path.read_text() + tables)
    return path


class TestDevices:
    """list, rename, remove: JSON output, errors with exit code 2, nothing half-written."""

    async def test_list_rename_remove_json(self, radio: VirtualRadio, tmp_path: Path) -> None:
        """A paired meter and a cuff: list shows both (bonded yes/no); rename relabels;
        remove takes the meter off the list and deletes its bond."""
        await start_meter(radio)
        cfg_path = write_config(tmp_path, radio.stack)
        code, _out, err = await run_cli(
            "pair", "--config", str(cfg_path), "--scan-s", SCAN_S, "--address", DEVICE_ADDRESS
        )
        assert 0 == code, err
        text = cfg_path.read_text()
        cfg_path.write_text(
            text + '\n[[devices]]\nkind = "blood_pressure"\n'
            'address = "F0:00:00:00:10:01"\nlabel = "cuff"\n'
        )

        code, out, err = await run_cli("devices", "list", "--config", str(cfg_path), "--json")
        assert 0 == code, err
        assert [
            {
                "label": "glucose",
                "kind": "glucose",
                "device": "..:12:34",
                "pairing": "required",
                "bonded": True,
                "last_sync_age_s": None,
                "battery_percent": None,
            },
            {
                "label": "cuff",
                "kind": "blood_pressure",
                "device": "..:10:01",
                "pairing": "none",
                "bonded": False,
                "last_sync_age_s": None,
                "battery_percent": None,
            },
        ] == json.loads(out)

        code, out, err = await run_cli(
            "devices", "rename", "glucose", "meter", "--config", str(cfg_path), "--json"
        )
        assert (0, {"renamed": "glucose", "label": "meter"}) == (code, json.loads(out)), err

        code, out, err = await run_cli(
            "devices", "remove", "meter", "--config", str(cfg_path), "--json"
        )
        assert (0, {"removed": "meter", "bond_deleted": True}) == (code, json.loads(out)), err
        assert ["cuff"] == [d.label for d in config.load(cfg_path).devices]
        assert DEVICE_ADDRESS not in (tmp_path / "state" / BONDS_FILE).read_text()
        assert "# The allowlist: `homehub pair` adds entries here." in cfg_path.read_text()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("rename", "nope", "x"), "no device labelled 'nope'"),
            (("rename", "cuff", "meter"), "'meter' is already used"),
            (("rename", "cuff", "Bad Label"), "is not a label"),
            (("remove", "nope"), "no device labelled 'nope'"),
        ],
    )
    async def test_errors_exit_2_and_change_nothing(
        self, tmp_path: Path, args: tuple[str, ...], message: str
    ) -> None:
        """Unknown label, duplicate label, bad label: one line, exit 2, file unchanged."""
        cfg_path = with_devices(
            tmp_path,
            "bumble:tcp-client:127.0.0.1:9",
            [
                {"kind": "blood_pressure", "address": "F0:00:00:00:10:01", "label": "cuff"},
                {"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter"},
            ],
        )
        before = cfg_path.read_bytes()
        code, _out, err = await run_cli("devices", *args, "--config", str(cfg_path))
        assert 2 == code
        assert message in err
        assert 1 == len(err.strip().splitlines())
        assert before == cfg_path.read_bytes()

    def test_unwritable_config_exit_2(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The rename over the configuration fails (a read-only file system): exit 2, one
        line, the configuration unchanged and no temporary file left."""
        cfg_path = with_devices(
            tmp_path,
            "bumble:tcp-client:127.0.0.1:9",
            [{"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter"}],
        )
        before = cfg_path.read_bytes()

        def read_only(*_args: object) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(os, "replace", read_only)
        code = cli.main(["devices", "rename", "meter", "m2", "--config", str(cfg_path)])
        err = capsys.readouterr().err
        assert 2 == code
        assert "cannot be written (Read-only file system)" in err
        assert before == cfg_path.read_bytes()
        assert [cfg_path.name] == [p.name for p in tmp_path.iterdir() if p.is_file()]

    def test_bond_not_deleted_is_said_after_the_removal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A key store the hub refuses (readable by others): the device is off the
        allow-list, the command says the bond was not deleted and why, exit 1."""
        cfg_path = with_devices(
            tmp_path,
            "bumble:tcp-client:127.0.0.1:9",
            [{"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter"}],
        )
        bonds = tmp_path / "state" / BONDS_FILE
        bonds.parent.mkdir(mode=0o700)
        bonds.write_text("{}")
        bonds.chmod(0o644)
        code = cli.main(["devices", "remove", "meter", "--config", str(cfg_path)])
        err = capsys.readouterr().err
        assert 1 == code
        assert "removed 'meter' from the allow-list, but its bond was not deleted" in err
        assert "mode 0644" in err
        assert [] == list(config.load(cfg_path).devices)

    async def test_list_on_bluez_without_dbus(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On BlueZ with no D-Bus to ask, bonded is unknown (null), stdout is only the JSON."""
        cfg_path = with_devices(
            tmp_path,
            "bluez",
            [{"kind": "glucose", "address": "F0:00:00:00:20:01", "label": "meter"}],
        )
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
        code, out, err = await run_cli("devices", "list", "--config", str(cfg_path), "--json")
        assert 0 == code, err
        assert [None] == [row["bonded"] for row in json.loads(out)]
