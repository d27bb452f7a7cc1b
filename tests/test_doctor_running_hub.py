"""``homehub doctor`` and ``homehub factory-reset`` beside a real ``homehub run`` in the virtual
home (Bumble radio, emulated cuff, mosquitto over TLS, the reference receiver).

While the daemon runs: the doctor names its pid, leaves its Bumble transport alone, reaches
the broker without disturbing the daemon's session (a reading taken afterwards still
arrives), and the factory reset is refused without touching anything. Once the daemon has
stopped, the reset runs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Final

import pytest

from hil.broker import Broker
from hil.emulators.cuff import BpReading
from hil.emulators.encoding import DateTime
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_radio import VirtualRadio
from tests.agent_process import agent_process, stop
from tests.phi_canaries import DEVICE_ADDRESS
from tests.test_end_to_end import CANARY_DIS
from tests.virtual_home_fixtures import canary_agent_config, collect

pytestmark = pytest.mark.timeout(90)

HOMEHUB: Final = Path(sys.executable).with_name("homehub")
COMMAND_TIMEOUT_S: Final = 60.0
FIRST: Final = BpReading(128, 82, 97, time_stamp=DateTime(2026, 11, 20, 7, 45, 10), pulse_rate=71)
SECOND: Final = BpReading(141, 88, 106, time_stamp=DateTime(2026, 11, 21, 19, 2, 0), pulse_rate=77)


async def _homehub(*argv: str) -> tuple[int, str, str]:
    """``homehub ARGV`` in its own process; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(HOMEHUB),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_doctor_and_reset_beside_the_running_daemon(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    request: pytest.FixtureRequest,
) -> None:
    async with VirtualRadio() as radio:
        cuff = await radio.add_cuff((FIRST,), address=DEVICE_ADDRESS, info=CANARY_DIS)
        config = canary_agent_config(tmp_path, radio, dev_pki, broker.port)
        async with agent_process(config, request.node.nodeid) as agent:
            await collect(receiver, 1)  # running: it collected, stored and published

            code, out, _err = await _homehub("doctor", "--config", str(config), "--json")
            rows = {row["check"]: row for row in json.loads(out)}
            assert code == sum(1 for row in rows.values() if row["result"] == "fail")
            assert rows["daemon"]["finding"].startswith(f"running (pid {agent.pid})")
            assert rows["BLE adapter"]["result"] == "skip"
            assert rows["BLE adapter"]["finding"] == (
                "the daemon holds the Bumble transport (tcp-client)"
            )
            assert rows["platform reachable (TLS)"]["result"] == "pass"
            assert rows["state directory"]["result"] == "pass"

            code, _out, err = await _homehub("factory-reset", "--config", str(config), "--yes")
            assert code == 2
            assert f"held by pid {agent.pid}: the homehub daemon is running" in err
            assert (tmp_path / "state" / "outbox.db").exists()

            # The doctor's probe left the daemon's session alone: the next reading arrives.
            await cuff.add_reading(SECOND)
            await collect(receiver, 1)
            assert 0 == await stop(agent)

    code, out, _err = await _homehub("factory-reset", "--config", str(config), "--yes", "--json")
    assert code == 0
    assert json.loads(out)["data_key_destroyed"] is True
    assert not (tmp_path / "state" / "outbox.db").exists()
