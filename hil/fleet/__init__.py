"""The fleet scenario: hundreds of hubs on one machine against one broker that restarts.

``python -m hil.fleet --hubs 200 --per-process 25 --backlog 100`` (hil/fleet/README.md).

Each hub is the product's own data path without its BLE side: its own hub id, client
certificate and signing key (hil/pki.py), its own encrypted outbox filled with a backlog
(:func:`hil.bench.drain.fill_outbox`), its own storage thread, :class:`agent.uplink.Uplink`
with the real retry policy (:mod:`agent.retry`) and :class:`agent.publisher.Publisher`
deleting on the platform's receipts. Several hubs share one asyncio loop in a worker process
(:mod:`hil.fleet.worker`); the reference platform (:class:`hil.receiver.Receiver` through an
MQTT 5 shared subscription) verifies, stores and receipts. The scenario
(:mod:`hil.fleet.scenario`) connects every hub, restarts the broker mid-drain, and records
when each hub came back and when every backlog had arrived (:mod:`hil.fleet.figures`).

Modules: :mod:`~hil.fleet.plan` (options, identities, each worker's share),
:mod:`~hil.fleet.hub` (one hub's parts), :mod:`~hil.fleet.worker` (a process of hubs),
:mod:`~hil.fleet.platform_side` (the receiver and its count of readings),
:mod:`~hil.fleet.broker_setup` (mosquitto for a fleet), :mod:`~hil.fleet.scenario` (the
phases), :mod:`~hil.fleet.figures` (spreads and the report), :mod:`~hil.fleet.plot` (the PNG).
"""
