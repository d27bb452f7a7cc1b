"""TLS negatives of issue 9's Done-when, on a real mosquitto: a broker certificate the hub must
refuse (one of another CA, one for another host, an expired one, or the hub configured with
another CA). For each: no MQTT byte is sent (the broker never sees a CONNECT: its log names no
client), the next attempt waits at least the refusal floor of 30 s (asserted on the computed
delay with an injected rng, not by waiting), and a ``security`` event reaches the daemon's sink.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

from agent.retry import REFUSAL_BACKOFF_FLOOR_S
from agent.security import SecurityEvent
from agent.uplink import Refusal, RefusalCause, Uplink
from hil.broker import Broker
from hil.pki import DevPki
from tests.conftest import HUB_ID, uplink_settings

TIMEOUT_S: Final = 10.0
CONNECTED_LINE: Final = f" as {HUB_ID} ("
"""mosquitto's 'New client connected from <addr> as <client id> (p5, c0, k60, ...)': logged as
it reads a CONNECT."""


class _LowestRng:
    """The jitter's edge: always the lower bound, and what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return a


@contextlib.asynccontextmanager
async def _running(uplink: Uplink) -> AsyncIterator[Uplink]:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(uplink.run(), name="test.uplink")
        try:
            yield uplink
        finally:
            await uplink.close()


def _case(
    case: str, dev_pki: DevPki, foreign_pki: DevPki
) -> tuple[tuple[Path, Path] | None, dict[str, Any], str]:
    """(what the broker serves, the hub's overrides, the security check expected)."""
    if case == "untrusted_server_certificate":
        return (foreign_pki.server_cert, foreign_pki.server_key), {}, "untrusted"
    if case == "host_name_mismatch":
        identity = dev_pki.issue_server("elsewhere", ("broker.elsewhere.example",))
        return identity, {}, "host_name_mismatch"
    if case == "expired":
        return dev_pki.issue_server("expired", expired=True), {}, "expired"
    assert case == "wrong_ca"
    return None, {"ca_file": foreign_pki.ca_cert}, "untrusted"


@pytest.mark.parametrize(
    "case", ["untrusted_server_certificate", "host_name_mismatch", "expired", "wrong_ca"]
)
async def test_refused_broker_certificate(
    dev_pki: DevPki, foreign_pki: DevPki, tmp_path: Path, case: str
) -> None:
    identity, overrides, check = _case(case, dev_pki, foreign_pki)
    rng = _LowestRng()
    events: list[SecurityEvent] = []
    refusals: list[Refusal] = []
    with Broker(dev_pki, tmp_path / "broker", server_identity=identity) as broker:
        settings = uplink_settings(
            dev_pki,
            broker.port,
            refusal_backoff_s=REFUSAL_BACKOFF_FLOOR_S,
            refusal_backoff_max_s=300.0,
            **overrides,
        )
        uplink = Uplink(settings, rng=rng, security_sink=events.append)
        uplink.on_refused(refusals.append)
        with capture_logs() as logs:
            async with _running(uplink), asyncio.timeout(TIMEOUT_S):
                await uplink.wait_until(lambda s: s.last_backoff_s > 0)
        log_text = broker.log_path.read_text(errors="replace")
    # No application byte: the broker never read a CONNECT.
    assert CONNECTED_LINE not in log_text
    assert (uplink.stats.connects, uplink.stats.connect_failures) == (0, 1)
    assert uplink.stats.last_failure.startswith("TLS: broker certificate not accepted (")
    # The refusal's backoff: at least the floor, computed, not waited for.
    assert uplink.stats.last_backoff_s == REFUSAL_BACKOFF_FLOOR_S
    assert rng.asked[-1][0] >= 30.0
    backoff = next(e for e in logs if e["event"] == "mqtt_backoff")
    assert (backoff["delay_s"], backoff["retryable"]) == (30.0, False)
    # The security event, to the sink and in the log, and the observers' verdict.
    assert [(e.source, e.check) for e in events] == [("uplink", check)]
    security = [e for e in logs if e["event"] == "security"]
    assert [(e["source"], e["check"]) for e in security] == [("uplink", check)]
    assert uplink.stats.server_certificate_refused == 1
    assert [(r.cause, r.of_client_certificate) for r in refusals] == [
        (RefusalCause.SERVER_CERTIFICATE, False)
    ]


async def test_the_broker_log_shows_a_connect_when_there_is_one(
    dev_pki: DevPki, broker: Broker
) -> None:
    """The control of the check above: an accepted broker logs the hub's CONNECT; no security
    event."""
    events: list[SecurityEvent] = []
    uplink = Uplink(uplink_settings(dev_pki, broker.port), security_sink=events.append)
    async with _running(uplink), asyncio.timeout(TIMEOUT_S):
        await uplink.connected.wait()
    assert CONNECTED_LINE in broker.log_path.read_text(errors="replace")
    assert events == []
