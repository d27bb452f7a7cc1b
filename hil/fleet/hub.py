"""One hub of the fleet: the product's outbox, uplink and publisher, without the BLE side.

The parts are the daemon's own classes wired as agent/daemon.py wires them for a hub that
has nothing new to collect: the outbox opened on its own storage thread, an
:class:`~agent.uplink.Uplink` with :class:`~agent.uplink.UplinkSettings` (so the backoff is
:meth:`UplinkSettings.backoff`, the real full-jitter policy, and the first connect waits
``first_connect_jitter_s``), and a :class:`~agent.publisher.Publisher` that deletes only on
the platform's signed receipt, batches with the hub's key and compresses with the newest
shipped dictionary, as for a platform that announced it. Nothing here re-implements a loop of
theirs: the fleet only observes (connects, deletions).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from agent import cose, dictionaries
from agent.dictionaries import Dictionary
from agent.ingest import Signer
from agent.outbox import Outbox
from agent.profiles import AckMode
from agent.publisher import Publisher
from agent.sealing import Sealer, load_data_key
from agent.security import load_platform_key
from agent.storage import StorageThread
from agent.uplink import Uplink, UplinkSettings
from hil.fleet.plan import HubSpec, WorkerPlan

BROKER_HOST: Final = "127.0.0.1"


def newest_dictionary() -> Dictionary:
    """The dictionary a hub compresses with: the newest shipped (hil/bench/uplink.py's choice:
    a platform holding all of them announces them, and the hub takes the highest id)."""
    held = dictionaries.load()
    return held[max(held)]


@dataclass(frozen=True, slots=True)
class FleetHub:
    """A running hub's parts (see the module doc); the caller runs ``uplink.run()`` and
    ``publisher.run()`` as tasks."""

    spec: HubSpec
    uplink: Uplink
    publisher: Publisher


@contextlib.asynccontextmanager
async def open_hub(
    spec: HubSpec,
    plan: WorkerPlan,
    dictionary: Dictionary,
    on_connected: Callable[[int], None],
    on_deleted: Callable[[int, int], None],
) -> AsyncIterator[FleetHub]:
    """Open ``spec``'s outbox on a storage thread of its own and build its uplink and
    publisher; close the outbox and join the thread on the way out.

    ``on_connected(index)`` runs after every CONNACK of this hub; ``on_deleted(index, n)``
    after every batch of ``n`` records deleted on a receipt.
    """
    options = plan.options
    settings = UplinkSettings(
        hub_id=spec.hub_id,
        host=BROKER_HOST,
        port=plan.broker_port,
        ca_file=plan.ca_file,
        cert_file=spec.cert,
        key_file=spec.key,
        backoff_base_s=options.backoff_base_s,
        backoff_max_s=options.backoff_max_s,
        first_connect_jitter_s=options.boot_jitter_s,
    )
    rng = None if options.seed is None else random.Random(options.seed + spec.index)

    def deleted(seqs: Sequence[int]) -> None:
        on_deleted(spec.index, len(seqs))

    async with StorageThread() as storage:
        sealer = Sealer(load_data_key(spec.data_key))
        box = await storage.call(Outbox.open, spec.outbox, sealer, spec.hub_id)
        try:
            uplink = Uplink(settings, rng=rng)
            uplink.on_connected(lambda: on_connected(spec.index))
            publisher = Publisher(
                storage,
                box,
                uplink,
                on_delivered=deleted,
                ack=AckMode.RECEIPT,
                platform_key=load_platform_key(plan.platform_cert),
                signer=Signer.from_key(cose.load_signing_key(spec.key)),
                dictionary=lambda: dictionary,
                batch_max_readings=options.batch_max_readings,
            )
            yield FleetHub(spec, uplink, publisher)
        finally:
            await storage.call(box.close)
