"""A device's sync state outside the daemon (issue 8, "homehub devices lists (with last
reading age and battery when known), renames and removes devices"): the Battery Level a
session reads, committed with its first reading and shown by ``homehub devices list``; and
``homehub devices rename``, which moves the device's sync state with its label, so a
renamed glucometer resumes from its RACP mark and keeps its identity pin.

The hub is the daemon's own :class:`agent.daemon.Hub` with its BLE collector on the Bumble
virtual radio and an unreachable broker (every stored record stays pending); the commands
run as ``python -m agent`` does. Nothing sleeps: every wait is for a session's end.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from structlog.testing import capture_logs

from agent import config
from agent.ble import identity
from agent.ble.gatt_session import BATTERY_SYNC_KEY
from agent.ble.gls_session import SYNC_KEY, SyncMark, fingerprint
from agent.daemon import Hub, open_outbox
from agent.errors import ConfigError, StorageError
from agent.outbox import Outbox, forget_sync_state, move_sync_state
from agent.sealing import Sealer
from hil.emulators.glucometer import Glucometer, example_records
from hil.emulators.peripheral import DeviceInformation
from hil.pki import DevPki
from hil.virtual_radio import VirtualRadio
from tests import phi_canaries
from tests.collector_home import WAIT_S, events_named, running
from tests.conftest import MeterFactory
from tests.outbox_helpers import HUB
from tests.test_glucometer_quirks import a_full_session_later, later_records
from tests.test_pairing_cli import run_cli as homehub

pytestmark = pytest.mark.timeout(120)


def write_config(tmp_path: Path, radio: VirtualRadio, pki: DevPki, label: str) -> Path:
    """The daemon's configuration file: this radio, one glucometer labelled ``label``, an
    unreachable broker (port 9: refused)."""
    state = tmp_path / "state"
    mapping: dict[str, Any] = {
        "hub": {"id": pki.hub_id, "timezone": "UTC", "state_dir": str(state)},
        "patient": {"id": phi_canaries.PATIENT_ID},
        "ble": {
            "stack": radio.stack,
            "scan_timeout_s": 5.0,
            "connect_timeout_s": 5.0,
            "quiet_period_s": 1.0,
            "session_timeout_s": 30.0,
            "cycle_interval_s": 0.5,
        },
        "devices": [{"kind": "glucose", "address": phi_canaries.DEVICE_ADDRESS, "label": label}],
        "outbox": {"path": str(state / "outbox.db"), "key_file": str(tmp_path / "data.key")},
        "signing": {"key_file": str(pki.hub_key)},
        "mqtt": {
            "host": "127.0.0.1",
            "port": 9,
            "ca_file": str(pki.ca_cert),
            "cert_file": str(pki.hub_cert),
            "key_file": str(pki.hub_key),
        },
    }
    path = tmp_path / "homehub.toml"
    path.write_text(tomlkit.dumps(mapping))
    path.chmod(0o640)
    return path


async def stored(hub: Hub, count: int) -> None:
    """Return once the hub has stored ``count`` readings (a session ends only once its
    readings are committed)."""
    async with asyncio.timeout(WAIT_S):
        while hub.stored < count:
            hub.session_done.clear()
            await hub.session_done.wait()


def sync_state(cfg_path: Path) -> dict[tuple[str, str], bytes]:
    """Every committed sync-state value, opened with the hub's key (the daemon stopped)."""
    outbox, _signer = open_outbox(config.load(cfg_path))
    try:
        return outbox.all_sync_state()
    finally:
        outbox.close()


async def battery_listed(cfg_path: Path) -> int | None:
    """The meter's battery level as ``homehub devices list --json`` shows it."""
    code, out, err = await homehub("devices", "list", "--config", str(cfg_path), "--json")
    assert 0 == code, err
    (row,) = json.loads(out)
    level: int | None = row["battery_percent"]
    return level


async def test_battery_level_is_kept_with_a_reading_and_listed(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """A meter with a Battery Service: each session reads its level (logged, no PHI) and
    commits it with the session's first reading; ``homehub devices list`` shows the last one
    committed. A session that hands on no reading keeps none (the level read then is not
    listed)."""
    glucometer: Glucometer = await meter(example_records(), battery_level=87)
    cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
    assert await battery_listed(cfg_path) is None  # no outbox yet
    with capture_logs() as events:
        async with running(config.load(cfg_path)) as hub:
            await stored(hub, 4)
            glucometer.battery_level = 55
            glucometer.add_record(later_records(1)[0])
            await stored(hub, 5)
            glucometer.battery_level = 30  # read by the next sessions, which store nothing
            await a_full_session_later(hub)
            assert hub.stored == 5
    read = [e["battery_pct"] for e in events_named(events, "ble_battery_level_read")]
    assert read[:2] == [87, 55]
    assert set(read[2:]) == {30}
    assert sync_state(cfg_path)[("meter", BATTERY_SYNC_KEY)] == bytes((55,))
    assert await battery_listed(cfg_path) == 55


async def test_no_battery_service_lists_none(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """A meter without a Battery Service: its readings are stored as ever, no level is kept
    and the list shows none."""
    await meter(example_records())
    cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
    with capture_logs() as events:
        async with running(config.load(cfg_path)) as hub:
            await stored(hub, 4)
    assert events_named(events, "ble_battery_level_read") == []
    assert len(events_named(events, "ble_battery_level_absent")) >= 1
    assert ("meter", BATTERY_SYNC_KEY) not in sync_state(cfg_path)
    assert await battery_listed(cfg_path) is None


async def test_renamed_meter_resumes_from_its_mark(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """``homehub devices rename meter glucometer`` with the daemon stopped moves the meter's
    RACP mark and identity pin to the new label: the restarted daemon's session asks for
    ">= mark+1" (01 03 01 05 00), stores exactly the two new records, sends nothing again
    and pins no identity anew; nothing is left under the old label."""
    records = example_records()
    glucometer: Glucometer = await meter(records)
    cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
    async with running(config.load(cfg_path)) as hub:
        await stored(hub, len(records))
    before = sync_state(cfg_path)
    assert set(before) == {("meter", SYNC_KEY), ("meter", identity.SYNC_KEY)}

    code, out, err = await homehub(
        "devices", "rename", "meter", "glucometer", "--config", str(cfg_path), "--json"
    )
    assert (0, {"renamed": "meter", "label": "glucometer"}) == (code, json.loads(out)), err

    after = sync_state(cfg_path)
    assert after == {("glucometer", key): value for (_, key), value in before.items()}
    added = [glucometer.add_record(r) for r in later_records(2)]
    asked_before = len(glucometer.requests)
    with capture_logs() as events:
        async with running(config.load(cfg_path)) as hub:
            await stored(hub, len(added))
            await a_full_session_later(hub)
            assert (hub.stored, hub.duplicates, hub.security_events) == (2, 0, 0)
    resumed = glucometer.requests[asked_before : asked_before + 3]
    assert resumed == [bytes.fromhex(h) for h in ("0106", "01040104000400", "0103010500")]
    assert [e["event"] for e in events if e["event"].startswith("gls_sync_first")] == []
    final = sync_state(cfg_path)
    assert set(final) == {("glucometer", SYNC_KEY), ("glucometer", identity.SYNC_KEY)}
    assert final[("glucometer", identity.SYNC_KEY)] == before[("meter", identity.SYNC_KEY)]
    newest = added[-1]
    assert final[("glucometer", SYNC_KEY)] == bytes(
        SyncMark(newest.sequence_number, fingerprint(newest.measurement_value()))
    )


async def test_rename_is_refused_while_the_daemon_runs(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """While the daemon holds the outbox open, rename refuses (exit 1, one line saying to
    stop the daemon first) after a short wait, and changes neither the file nor the sync
    state."""
    await meter(example_records())
    cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
    text = cfg_path.read_text()
    async with running(config.load(cfg_path)) as hub:
        await stored(hub, 4)
        code, out, err = await homehub(
            "devices", "rename", "meter", "glucometer", "--config", str(cfg_path)
        )
    assert (1, "") == (code, out)
    assert "the outbox is open in another process: stop homehub run first" in err
    assert err.count("\n") == 1
    assert cfg_path.read_text() == text
    assert {d for d, _ in sync_state(cfg_path)} == {"meter"}


class TestMoveSyncState:
    """agent.outbox.move_sync_state on its own: what moves, what is dropped, when the key
    is opened, and that a failed edit moves nothing."""

    @staticmethod
    def _fill(db_path: Path, sealer: Sealer) -> None:
        with Outbox.open(db_path, sealer, HUB) as ob:
            ob.set_sync_state("old", SYNC_KEY, b"\x05\x00")
            ob.set_sync_state("old", BATTERY_SYNC_KEY, b"\x57")
            ob.set_sync_state("new", identity.SYNC_KEY, b"a removed device's pin")
            ob.set_sync_state("other", SYNC_KEY, b"\x09\x00")

    @staticmethod
    def _state(db_path: Path, sealer: Sealer) -> dict[tuple[str, str], bytes]:
        with Outbox.open(db_path, sealer, HUB) as ob:
            return ob.all_sync_state()

    def test_moves_resealed_and_drops_what_new_had(self, db_path: Path, sealer: Sealer) -> None:
        """Both values of ``old`` open under ``new``; ``new``'s own stale value is gone, other
        devices are untouched; the edit ran once, inside the transaction."""
        self._fill(db_path, sealer)
        edits: list[str] = []
        moved = move_sync_state(
            db_path, HUB, "old", "new", lambda: sealer, then=lambda: edits.append("edited")
        )
        assert (moved, edits) == (2, ["edited"])
        assert self._state(db_path, sealer) == {
            ("new", SYNC_KEY): b"\x05\x00",
            ("new", BATTERY_SYNC_KEY): b"\x57",
            ("other", SYNC_KEY): b"\x09\x00",
        }

    def test_a_failed_edit_moves_nothing(self, db_path: Path, sealer: Sealer) -> None:
        """The configuration's edit raising rolls the move back."""
        self._fill(db_path, sealer)
        before = self._state(db_path, sealer)

        def refuse() -> None:
            raise ConfigError("homehub.toml", "devices", "cannot be written")

        with pytest.raises(ConfigError):
            move_sync_state(db_path, HUB, "old", "new", lambda: sealer, then=refuse)
        assert self._state(db_path, sealer) == before

    def test_the_key_is_opened_only_when_there_is_a_value(
        self, db_path: Path, sealer: Sealer
    ) -> None:
        """Nothing under ``old`` (or no outbox at all): the key is never asked for."""

        def no_key() -> Sealer:
            raise AssertionError("the key was opened")

        assert move_sync_state(db_path, HUB, "old", "new", no_key, then=lambda: None) == 0
        self._fill(db_path, sealer)
        assert move_sync_state(db_path, HUB, "absent", "new", no_key, then=lambda: None) == 0
        assert ("new", identity.SYNC_KEY) not in self._state(db_path, sealer)


class TestForgetSyncState:
    """agent.outbox.forget_sync_state (``homehub devices remove``): a device added later
    under a removed one's label inherits nothing (above all not its identity pin, which
    would have the new device refused as an impostor)."""

    def test_deletes_only_that_device(self, db_path: Path, sealer: Sealer) -> None:
        TestMoveSyncState._fill(db_path, sealer)
        edits: list[str] = []
        assert forget_sync_state(db_path, "old", then=lambda: edits.append("edited")) == 2
        assert edits == ["edited"]
        assert set(TestMoveSyncState._state(db_path, sealer)) == {
            ("new", identity.SYNC_KEY),
            ("other", SYNC_KEY),
        }

    def test_a_failed_edit_deletes_nothing(self, db_path: Path, sealer: Sealer) -> None:
        TestMoveSyncState._fill(db_path, sealer)
        before = TestMoveSyncState._state(db_path, sealer)

        def refuse() -> None:
            raise ConfigError("homehub.toml", "devices", "cannot be written")

        with pytest.raises(ConfigError):
            forget_sync_state(db_path, "old", then=refuse)
        assert TestMoveSyncState._state(db_path, sealer) == before

    def test_no_outbox_only_edits(self, tmp_path: Path) -> None:
        edits: list[str] = []
        assert forget_sync_state(tmp_path / "absent.db", "old", then=lambda: edits.append("e")) == 0
        assert edits == ["e"]

    def test_refused_while_another_process_holds_the_outbox(
        self, db_path: Path, sealer: Sealer
    ) -> None:
        """The daemon's open outbox (another connection holding its write lock here) makes
        it refuse, saying to stop the daemon, and changes nothing."""
        TestMoveSyncState._fill(db_path, sealer)
        with Outbox.open(db_path, sealer, HUB) as ob:
            holder = ob._conn  # the daemon's connection, mid-transaction
            holder.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StorageError) as caught:
                    forget_sync_state(db_path, "old", then=lambda: None)
            finally:
                holder.execute("ROLLBACK")
        assert "stop homehub run first" in caught.value.reason
        assert ("old", SYNC_KEY) in TestMoveSyncState._state(db_path, sealer)


async def test_remove_then_a_new_device_under_the_label_is_not_refused(
    tmp_path: Path, radio: VirtualRadio, meter: MeterFactory, dev_pki: DevPki
) -> None:
    """A meter pinned at its first contact is removed; another meter (another serial and
    System ID) is added under the same label: it syncs with no security event, since remove
    deleted the old pin with the entry."""
    first = await meter(example_records())
    cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
    async with running(config.load(cfg_path)) as hub:
        await stored(hub, 4)
    assert ("meter", identity.SYNC_KEY) in sync_state(cfg_path)
    code, _out, err = await homehub("devices", "remove", "meter", "--config", str(cfg_path))
    assert code == 0, err
    assert sync_state(cfg_path) == {}
    await first.stop()

    device = await radio.add_peripheral_device(phi_canaries.DEVICE_ADDRESS, "glucometer")
    other = Glucometer(
        device, [], info=DeviceInformation(serial_number="SN-0000-4242", system_id=(0x42, 0x4242))
    )
    for record in later_records(3):
        other.add_record(record)  # numbered by the meter: 0, 1, 2
    await other.start()
    try:
        cfg_path = write_config(tmp_path, radio, dev_pki, "meter")
        with capture_logs() as events:
            async with running(config.load(cfg_path)) as hub:
                await stored(hub, 3)
                assert hub.security_events == 0
    finally:
        await other.stop()
    assert events_named(events, "security") == []
