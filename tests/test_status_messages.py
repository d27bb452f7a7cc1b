"""Status and event messages (agent/status_messages.py): the signed bytes a platform reads,
checked with the reference platform's own verifier (pycose), and the event gate's bounds."""

from __future__ import annotations

from typing import Final

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.ingest import Signer
from agent.status_messages import (
    EVENT_CONTENT_TYPE,
    STATUS_CONTENT_TYPE,
    Event,
    EventGate,
    EventKind,
    HubStatus,
    build_event,
    build_status,
)
from hil.platform_signing import verify_platform_message

HUB: Final = "hub-0001"
IAT: Final = 1_800_000_000


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.from_key(ec.generate_private_key(ec.SECP256R1()))


def test_online_status_carries_counts_and_nothing_else(signer: Signer) -> None:
    status = HubStatus(
        pending=12,
        refused=1,
        damaged=0,
        oldest_age_s=61.6,
        awaiting_receipt=3,
        budget=None,
        dictionaries=(1,),
    )
    message = build_status(hub_id=HUB, iat=IAT, status=status, signer=signer)
    body = verify_platform_message(message, signer.public_key, STATUS_CONTENT_TYPE)
    assert body == {
        "v": 1,
        "hub": HUB,
        "iat": IAT,
        "state": "online",
        "pending": 12,
        "refused": 1,
        "damaged": 0,
        "oldest_age_s": 62,
        "awaiting_receipt": 3,
        "dictionaries": [1],
    }
    # Deterministic CBOR, as every message of the contract.
    payload = cbor2.loads(message).value[2]
    assert payload == cbor2.dumps(cbor2.loads(payload), canonical=True)


def test_offline_status_is_the_bare_will(signer: Signer) -> None:
    message = build_status(hub_id=HUB, iat=IAT, status=None, signer=signer)
    body = verify_platform_message(message, signer.public_key, STATUS_CONTENT_TYPE)
    assert body == {"v": 1, "hub": HUB, "iat": IAT, "state": "offline"}


def test_budget_and_empty_outbox(signer: Signer) -> None:
    status = HubStatus(0, 0, 0, None, 0, budget="backfill_paused")
    body = verify_platform_message(
        build_status(hub_id=HUB, iat=IAT, status=status, signer=signer),
        signer.public_key,
        STATUS_CONTENT_TYPE,
    )
    assert "oldest_age_s" not in body
    assert ("backfill_paused", []) == (body["budget"], body["dictionaries"])


def test_event_has_exactly_its_fields(signer: Signer) -> None:
    event = Event(EventKind.SECURITY, "receipt", {"source": "receipt", "check": "forged"})
    message = build_event(hub_id=HUB, iat=IAT, event=event, signer=signer)
    body = verify_platform_message(message, signer.public_key, EVENT_CONTENT_TYPE)
    assert body == {
        "v": 1,
        "hub": HUB,
        "iat": IAT,
        "event": "security",
        "source": "receipt",
        "check": "forged",
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"source": "receipt"},  # one missing
        {"source": "receipt", "check": "forged", "detail": "x"},  # one too many
        {"source": "receipt", "check": "x" * 65},  # too long
        {"source": "receipt", "check": 2**32},  # too large
        {"source": "receipt", "check": 1.5},  # not an int or text
    ],
)
def test_event_fields_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="security"):
        Event(EventKind.SECURITY, "receipt", fields)  # type: ignore[arg-type]


def _battery(device: str) -> Event:
    return Event(
        EventKind.BATTERY_LOW,
        device,
        {"device": device, "kind": "blood_pressure", "battery_pct": 7},
    )


def _security(check: str) -> Event:
    return Event(EventKind.SECURITY, "receipt", {"source": "receipt", "check": check})


def test_gate_one_per_kind_and_source_per_interval() -> None:
    gate = EventGate(interval_s=3600.0)
    assert gate.offer(_security("forged"), 0.0)
    assert not gate.offer(_security("expired"), 10.0)  # same kind and source
    assert gate.offer(_battery("10:01"), 10.0)
    assert gate.offer(_battery("10:02"), 10.0)  # another device
    assert not gate.offer(_battery("10:01"), 3600.0 * 23)  # once per device a day
    assert gate.offer(_security("forged"), 3600.0)  # the interval has passed
    assert gate.offer(_battery("10:01"), 86_410.0)
    assert (2, 0) == (gate.limited, gate.dropped)
    taken = [gate.take() for _ in range(len(gate))]
    assert [e.source for e in taken if e is not None] == [
        "receipt",
        "10:01",
        "10:02",
        "receipt",
        "10:01",
    ]
    assert gate.take() is None


def test_gate_is_bounded() -> None:
    gate = EventGate(queue_max=4)
    offered = [gate.offer(_battery(f"{i:02d}:00"), 0.0) for i in range(10)]
    assert [True] * 4 + [False] * 6 == offered
    assert (4, 6) == (len(gate), gate.dropped)
    for i in range(1000):  # many sources over time: the memory of them stays bounded
        gate.take()
        gate.offer(_battery(f"{i % 100:02d}:{i // 100:02d}"), float(i))
    assert len(gate._last) <= 16
