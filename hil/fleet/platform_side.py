"""The platform of the fleet run: the reference receiver on a shared subscription, and its count.

One :class:`hil.receiver.Receiver` subscribes through ``$share/fleet/homehub/v1/+/readings``,
how a platform spreads a fleet over several receivers (each message goes to one member of the
group): with one member it gets everything, and more members join by starting more receivers
with their own client ids (hil/fleet/README.md). It knows every hub's certificate, verifies
each envelope with pycose, stores each reading durably (deduplicated by hub and reading id)
and sends signed receipts; only those delete a reading on a hub.

:class:`FleetPlatform` takes every new reading the receiver hands on and counts it by
``(hub, seq)``: the run's proof that each hub's backlog arrived, every reading exactly once.
It keeps counts, never a reading's content.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from agent import dictionaries
from hil.fleet.plan import HubSpec
from hil.pki import DevPki
from hil.platform_signing import PlatformSigner
from hil.platform_verify import Dictionaries, HubDirectory
from hil.receiver import Receiver

SHARE_GROUP: Final = "fleet"
CLIENT_ID: Final = "platform-fleet-1"


class FleetPlatform:
    """The receiver (see the module doc) and what it handed on, per ``(hub, seq)``."""

    def __init__(self, pki: DevPki, port: int, hubs: Sequence[HubSpec], state_dir: Path) -> None:
        self.receiver = Receiver(
            port=port,
            ca_file=pki.ca_cert,
            cert_file=pki.receiver_cert,
            key_file=pki.receiver_key,
            hubs=HubDirectory.load(pki.ca_cert, [(h.hub_id, h.cert) for h in hubs]),
            signer=PlatformSigner.from_pem_file(pki.platform_key),
            state_dir=state_dir,
            dictionaries=Dictionaries.load(dictionaries.PACKAGE_DIR),
            share_group=SHARE_GROUP,
            client_id=CLIENT_ID,
        )
        self.copies: collections.Counter[tuple[str, int]] = collections.Counter()
        """Times each reading was handed on as new: exactly 1 for every reading held."""
        self.handed_on = 0
        self._change = asyncio.Event()

    async def consume(self) -> None:
        """Take each new reading off the receiver's queue, as the platform's consumer would;
        count it. Runs until cancelled."""
        while True:
            reading = await self.receiver.readings.get()
            self.copies[(reading.hub_id, reading.seq)] += 1
            self.handed_on += 1
            event, self._change = self._change, asyncio.Event()
            event.set()

    async def until_handed_on(self, count: int) -> None:
        """Return once ``count`` readings were handed on (wrap in ``asyncio.timeout``)."""
        while self.handed_on < count:
            await self._change.wait()

    def delivery(self, hubs: Sequence[HubSpec], backlog: int) -> dict[str, Any]:
        """Whether every hub's seqs 1..``backlog`` were handed on exactly once; the receiver's
        counters beside (duplicates: copies the platform recognised and did not hand on)."""
        expected = {(h.hub_id, seq) for h in hubs for seq in range(1, backlog + 1)}
        held = set(self.copies)
        stats = self.receiver.stats
        return {
            "readings_expected": len(expected),
            "readings_handed_on": self.handed_on,
            "missing": len(expected - held),
            "unexpected": len(held - expected),
            "handed_on_twice": sum(1 for n in self.copies.values() if n > 1),
            "exactly_once": held == expected and all(n == 1 for n in self.copies.values()),
            "duplicates_removed": stats.duplicates,
            "conflicting_duplicates": stats.conflicting_duplicates,
            "rejected": stats.rejected_total,
            "envelopes": stats.envelopes,
            "batches": stats.batches,
            "compressed": stats.compressed,
            "messages_received": stats.received,
            "receipts_sent": stats.receipts_sent,
        }
