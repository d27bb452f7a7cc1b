"""Paired by a technician, then collected by the daemon: ``homehub pair`` on a terminal with
the passkey glucometer, then ``homehub run`` (a real process) syncs it over the persisted bond
without pairing again, and the readings reach the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_edit import remove_device
from hil.broker import Broker
from hil.emulators.glucometer import example_records
from hil.emulators.pairing import EmulatedPairing
from hil.pki import DevPki
from hil.receiver import Receiver
from hil.virtual_radio import VirtualRadio
from tests.agent_process import agent_process, stop
from tests.pairing_home import pair_by_terminal, start_meter
from tests.virtual_home_fixtures import canary_agent_config, collect

pytestmark = pytest.mark.timeout(120)

SYNC_WAIT_S = 20.0
"""A cold agent start, a scan and the five-record sync take ~3 s here."""


async def test_paired_meter_syncs_in_the_daemon_without_pairing_again(
    radio: VirtualRadio,
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    request: pytest.FixtureRequest,
) -> None:
    """The passkey is typed at the terminal; the daemon then delivers every record of the
    meter and the meter saw exactly one pairing (the technician's)."""
    pairing = EmulatedPairing.passkey_display()
    meter = await start_meter(radio, pairing, require_encryption=True)
    config = canary_agent_config(tmp_path, radio, dev_pki, broker.port)
    remove_device(config, "cuff")  # an empty allow-list: pairing adds the meter

    code, text = await pair_by_terminal(radio, config, pairing, "<passkey>")
    assert 0 == code, text

    async with agent_process(config, request.node.nodeid) as agent:
        readings = await collect(receiver, len(example_records()), SYNC_WAIT_S)
        assert 0 == await stop(agent)
    assert len(example_records()) == len({r.id for r in readings})
    assert (1, []) == (meter.pairings, meter.pairing_failures)
