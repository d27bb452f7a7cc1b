"""``homehub status`` against the running daemon and after it stopped.

The daemon is :class:`agent.daemon.Hub` in this process (tests/platform_hub.py), holding the
instance lock as ``homehub run`` does, against a real TLS mosquitto and the reference platform
(hil/receiver.py: verifies, stores, sends signed receipts). Readings go through the daemon's
own pipeline (:meth:`Hub.receive`, as a BLE session hands them on). ``homehub status`` itself
runs through :func:`agent.cli.main`, reading only the disk: the outbox, the daemon's state
file (agent/hub_state.py), the lock.

One named injection: the state file's least write interval (10 s on a hub, sparing the flash)
is 0.05 s here, so each change shows at once; the tests wait for the daemon's "written"
signal, never for time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from agent import config, hub_state, instance_lock
from agent.ble.gatt_session import BATTERY_SYNC_KEY
from agent.cli import main
from agent.daemon import Hub
from agent.status_report import status
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.receiver import Receiver
from tests.platform_hub import running_hub, write_hub_config
from tests.test_end_to_end_receipts import Deliveries

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("restore_logging")]

T: Final = 20.0
BATTERY_PERCENT: Final = 87
DEVICE_TOML: Final = f"""
[[devices]]
kind = "{DEVICE_CONFIG.kind}"
address = "{DEVICE_CONFIG.address}"
label = "{DEVICE_CONFIG.label}"
"""


def _hub_config(tmp_path: Path, pki: DevPki, port: int) -> Path:
    path = write_hub_config(tmp_path, pki, port, receipt_timeout_s=5.0)  # the least allowed
    path.write_text(path.read_text() + DEVICE_TOML)
    return path


async def _feed(hub: Hub, indices: range, *, battery: bool = False) -> None:
    for i in indices:
        raw = raw_measurement(i)
        if battery:
            raw = dataclasses.replace(raw, sync_state={BATTERY_SYNC_KEY: bytes([BATTERY_PERCENT])})
        await hub.receive(raw, DEVICE, DEVICE_CONFIG)


async def _until(
    hub: Hub, cfg: config.Config, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first report (read as ``homehub status`` does) for which ``holds``: looked at
    after each write of the daemon's state file, and whenever a count may have moved."""
    async with asyncio.timeout(T):
        while True:
            hub.hub_state_written.clear()  # before reading: a write meanwhile wakes the wait
            report = status(cfg)
            if holds(report):
                return report
            await hub.hub_state_written.wait()


def _status_json(capsys: pytest.CaptureFixture[str], *extra: str, config_path: Path) -> Any:
    capsys.readouterr()  # what came before
    assert 0 == main(["status", "--config", str(config_path), "--json", *extra])
    (line,) = _json_lines(capsys.readouterr().out)
    return json.loads(line)


def _json_lines(out: str) -> list[str]:
    """The command's JSON lines (the in-process daemon's console log shares stdout)."""
    return [line for line in out.splitlines() if line.startswith("{")]


async def test_status_follows_the_daemon_and_outlives_it(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(hub_state, "WRITE_MIN_INTERVAL_S", 0.05)  # the named injection
    config_path = _hub_config(tmp_path, dev_pki, broker.port)
    cfg = config.load(config_path)
    deliveries = Deliveries()
    with instance_lock.hold(cfg.hub.state_dir):  # what `homehub run` holds for its life
        async with running_hub(config_path, observer=deliveries) as hub:
            uplink = hub.uplink
            assert uplink is not None
            # A platform that stores but does not receipt: PUBACKed, awaiting the receipt.
            async with Receiver.for_dev_pki(dev_pki, broker.port, receipts=False) as silent:
                async with asyncio.timeout(T):
                    await silent.subscribed.wait()
                    await _feed(hub, range(5), battery=True)
                    await silent.wait_until(lambda s: s.verified >= 5)
                    await uplink.wait_until(lambda s: s.acked >= 5)
                held = await _until(hub, cfg, lambda r: r["outbox"]["awaiting_receipt"] == 5)
            assert (5, "online") == (held["outbox"]["pending"], held["uplink"]["state"])
            assert {"running": True, "pid": os.getpid()} == {
                k: held["daemon"][k] for k in ("running", "pid")
            }
            assert importlib.metadata.version("homehub") == held["version"]
            assert {"backend": "none", "state": None} == held["indicator"]
            (row,) = held["devices"]
            assert {
                "label": "crash-cuff",
                "kind": "blood_pressure",
                "device": "..:C8:01",
                "battery_percent": BATTERY_PERCENT,
                "last_session": None,  # no BLE session: readings came through receive()
            } == {k: row[k] for k in ("label", "kind", "device", "battery_percent", "last_session")}
            assert 0 <= row["last_reading_age_s"] < T
            assert held["uplink"]["last_delivery"] is None

            # The receipting platform: the copies sent after the receipt timeout are receipted.
            async with Receiver.for_dev_pki(dev_pki, broker.port) as receipting:
                async with asyncio.timeout(T):
                    await receipting.subscribed.wait()
                    await deliveries.until(5)
                done = await _until(
                    hub,
                    cfg,
                    lambda r: (
                        r["uplink"]["last_delivery"] is not None and r["outbox"]["pending"] == 0
                    ),
                )
            assert 0 == done["outbox"]["awaiting_receipt"]
            assert 0 <= done["uplink"]["last_delivery_age_s"] < T
            assert done["outbox"]["oldest_age_s"] is None

            # The broker gone: offline, and what is taken meanwhile waits in the outbox.
            await broker.astop()
            await _feed(hub, range(5, 7))
            offline = await _until(
                hub,
                cfg,
                lambda r: r["uplink"]["state"] == "offline" and r["outbox"]["pending"] == 2,
            )
            assert 0 == offline["outbox"]["awaiting_receipt"]
            assert offline["outbox"]["oldest_age_s"] is not None

            # --watch --json: one line per refresh, a bounded number of them (--count).
            argv = ["status", "--config", str(config_path), "--json", "--watch"]
            argv += ["--count", "3", "--interval", "0.2"]
            capsys.readouterr()  # what came before
            assert 0 == await asyncio.to_thread(main, argv)
            lines = _json_lines(capsys.readouterr().out)
            assert 3 == len(lines)
            frames = [json.loads(line) for line in lines]
            assert [("offline", 2)] * 3 == [
                (f["uplink"]["state"], f["outbox"]["pending"]) for f in frames
            ]
            assert list(offline) == list(frames[0])  # the same keys, in the same order

    # The daemon stopped: status still answers from the disk, and says so.
    stopped = _status_json(capsys, config_path=config_path)
    assert {"running": False, "pid": None} == {k: stopped["daemon"][k] for k in ("running", "pid")}
    assert stopped["daemon"]["stopped_at"] is not None
    assert ("not_running", 2, 0) == (
        stopped["uplink"]["state"],
        stopped["outbox"]["pending"],
        stopped["outbox"]["awaiting_receipt"],
    )
    assert stopped["uplink"]["last_delivery"] == done["uplink"]["last_delivery"]
    assert BATTERY_PERCENT == stopped["devices"][0]["battery_percent"]
    assert stopped["devices"][0]["last_reading"] is not None
    assert {"backend": "none"} == stopped["modem"]

    # The table a technician reads.
    capsys.readouterr()
    assert 0 == main(["status", "--config", str(config_path)])
    table = capsys.readouterr().out
    for shown in ("daemon not running", "not_running", "crash-cuff", "..:C8:01", "87 %"):
        assert shown in table
    assert DEVICE_CONFIG.address not in table


def test_a_stale_or_foreign_state_file_is_not_believed(
    tmp_path: Path, dev_pki: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state file of an earlier run says nothing of the uplink now; one that is not what
    the daemon writes is ignored, not trusted and not a crash."""
    config_path = _hub_config(tmp_path, dev_pki, 1)
    cfg = config.load(config_path)
    state_path = cfg.hub.state_dir / hub_state.STATE_FILE
    earlier = hub_state.HubState(
        pid=os.getpid() + 1, started_at=1.0e9, uplink_online=True, uplink_since=1.0e9
    )
    hub_state.write(state_path, earlier)
    assert earlier == hub_state.read(state_path)
    # An outbox (empty) so the report can be read at all.
    with instance_lock.hold(cfg.hub.state_dir):
        from agent.daemon import open_outbox

        outbox, _signer = open_outbox(cfg)
        outbox.close()
        report = status(cfg)
    assert ("unknown", None) == (report["uplink"]["state"], report["outbox"]["awaiting_receipt"])
    # The kernel's NTP state (adjtimex): known on Linux, whatever this machine's clock does.
    assert report["clock"]["system_synchronized"] in (True, False)
    if os.geteuid() == 0:  # root (a technician's sudo) reads the daemon user's file
        os.chown(state_path, 4242, 4242)
        assert earlier == hub_state.read(state_path)
    link = state_path.with_name("link.json")
    link.symlink_to(state_path)
    assert hub_state.read(link) is None  # a symbolic link is not followed
    too_large = b" " * hub_state.MAX_BYTES + json.dumps(earlier.to_json()).encode()
    for garbage in (
        b"{",
        b'{"v": 2}',
        json.dumps({**earlier.to_json(), "pid": -1}).encode(),
        too_large,
    ):
        state_path.write_bytes(garbage)
        assert hub_state.read(state_path) is None
    report = status(cfg)
    assert "not_running" == report["uplink"]["state"]
    assert [None] * 2 == [report["devices"][0][k] for k in ("last_reading", "battery_percent")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--watch", "--interval", "0"], "--interval: 0 s is not between 0.2 and 3600 s"),
        (["--watch", "--interval", "nan"], "--interval: nan s is not between"),
        (["--watch", "--count", "0"], "--count: 0 is not between 1 and 1000000"),
    ],
)
def test_bad_arguments_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert 2 == main(["status", "--config", str(tmp_path / "none.toml"), *extra])
    err = capsys.readouterr().err
    assert 1 == err.count("\n")
    assert message in err


def test_no_outbox_yet_is_one_line(
    tmp_path: Path, dev_pki: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = _hub_config(tmp_path, dev_pki, 1)
    assert 1 == main(["status", "--config", str(config_path)])
    err = capsys.readouterr().err
    assert 1 == err.count("\n")
    assert "no outbox at this path" in err


def _stopped_hub(tmp_path: Path, pki: DevPki) -> Path:
    """A hub that ran once (its outbox exists) and is stopped."""
    config_path = _hub_config(tmp_path, pki, 1)
    from agent.daemon import open_outbox

    outbox, _signer = open_outbox(config.load(config_path))
    outbox.close()
    return config_path


@pytest.mark.parametrize("terminal", [True, False])
def test_watch_shows_the_table_each_refresh_and_an_error_as_one_line(
    tmp_path: Path, dev_pki: DevPki, terminal: bool
) -> None:
    """The live view (rich.live.Live on a terminal, one table after the other elsewhere)
    re-reads each refresh; a report that cannot be read (here: the outbox gone) is shown as
    its one line and the watch goes on."""
    import io
    import threading

    from agent.tech.status import watch

    cfg = config.load(_stopped_hub(tmp_path, dev_pki))
    reads: list[dict[str, Any]] = []
    calls = 0
    away = cfg.outbox.path.with_suffix(".away")

    def read() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            cfg.outbox.path.rename(away)
        elif calls == 3:
            away.rename(cfg.outbox.path)
        report = status(cfg)  # raises on the second read: no outbox at its path
        reads.append(report)
        return report

    out = io.StringIO()
    shown = watch(
        cfg,
        read,
        as_json=False,
        interval_s=0.01,
        frames=3,
        stop=threading.Event(),
        out=out,
        terminal=terminal,
    )
    text = out.getvalue()
    assert 3 == shown
    assert 2 == len(reads)  # the first and the third: the second raised
    assert "homehub status: StorageUnusableError" in text
    assert "no outbox at this path" in text
    assert text.count("daemon not running") >= 2  # the frames before and after the error
    assert ("\x1b[" in text) is terminal  # redrawn in place only on a terminal
    assert DEVICE_CONFIG.address not in text


def test_ctrl_c_ends_a_watch_with_exit_status_0(tmp_path: Path, dev_pki: DevPki) -> None:
    """The installed ``homehub`` command, as a technician runs it: ``--watch --json`` prints
    a line per refresh until Ctrl-C (SIGINT), then exits 0."""
    import signal
    import subprocess
    import sys

    config_path = _stopped_hub(tmp_path, dev_pki)
    homehub = Path(sys.executable).with_name("homehub")
    with subprocess.Popen(
        [str(homehub), "status", "--config", str(config_path), "--json", "--watch"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # a refresh was shown: it is watching
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=T)
    assert (0, "") == (proc.returncode, err)
    assert "not_running" == first["uplink"]["state"]
    assert all(json.loads(line)["hub"] == first["hub"] for line in rest.splitlines())


def test_the_table_shows_the_modem_registration_and_signal(
    tmp_path: Path,
    dev_pki: DevPki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The figures the daemon last wrote (agent/modem/state_file.py), as the table shows
    them: registration, technology, operator and signal, with their time."""
    from datetime import UTC, datetime

    from agent.modem import state_file
    from agent.modem.status import ModemStatus

    config_path = _stopped_hub(tmp_path, dev_pki)
    config_path.write_text(
        config_path.read_text() + '\n[modem]\nbackend = "at"\nport = "/dev/ttyUSB2"\n'
    )
    cfg = config.load(config_path)
    figures = ModemStatus(
        registration="home", technology="NR5G-SA", operator="HomeHub Test", rsrp_dbm=-95, sinr_db=12
    )
    state_file.write(
        cfg.hub.state_dir / state_file.STATE_FILE,
        figures,
        datetime(2026, 12, 2, 18, 30, tzinfo=UTC),
    )
    capsys.readouterr()
    assert 0 == main(["status", "--config", str(config_path)])
    table = " ".join(capsys.readouterr().out.split())  # the cell may wrap
    for shown in ("at: home on NR5G-SA", "operator HomeHub Test", "RSRP -95 dBm", "SINR 12 dB"):
        assert shown in table.replace("│ │", "").replace(" │ ", " ")


def test_root_reads_the_modem_figures_the_daemons_user_wrote(tmp_path: Path) -> None:
    """``sudo homehub status``: the modem figures file belongs to the daemon's user; root reads
    it (it holds no secret and no PHI, so the key files' owner check does not apply), while a
    symbolic link, a non-file and an oversized file are still not believed."""
    from datetime import UTC, datetime

    from agent.modem import state_file
    from agent.modem.status import ModemStatus

    path = tmp_path / state_file.STATE_FILE
    figures = ModemStatus(registration="home", technology="LTE", rsrp_dbm=-101)
    state_file.write(path, figures, datetime(2026, 12, 2, 18, 30, tzinfo=UTC))
    seen = state_file.read(path)
    assert seen is not None
    assert ("home", -101) == (seen["figures"]["registration"], seen["figures"]["rsrp_dbm"])
    if os.geteuid() == 0:
        os.chown(path, 4242, 4242)
        assert seen == state_file.read(path)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    assert state_file.read(link) is None
    assert state_file.read(tmp_path) is None
    path.write_bytes(b" " * (state_file.MAX_BYTES + 1))
    assert state_file.read(path) is None
