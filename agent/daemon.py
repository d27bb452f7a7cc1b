"""The daemon: collects from the configured devices, stores durably, publishes, forever.

Theory of operation
-------------------
Four named tasks run in one :class:`asyncio.TaskGroup` (docs/architecture.md):

``hub.collector``
    One BLE session per configured device (allowlist: no other device is ever connected),
    then a pause of ``ble.cycle_interval_s``. Each measurement's raw bytes go onto a bounded
    queue the moment they arrive. A failed session is logged and retried next round; the
    device keeps what it did not get confirmed.
``hub.ingest``
    Takes raw measurements off the queue: decode, normalize, and store in one outbox
    transaction that allocates the sequence number and signs the envelope with it inside
    (the durability point). Invalid bytes are logged with their reason and dropped; a
    duplicate (the same reading sent again) is recognised by its identifier and not stored
    twice.
``hub.publisher``
    Whenever the uplink is connected: puts records left in flight back to pending, then
    claims up to :data:`PUBLISH_WINDOW` records at a time, publishes them, and deletes each
    one when its PUBACK arrives. A failed publish ends the batch; the records go back to
    pending on the next connection and are sent again with the same bytes.
``hub.uplink``
    Keeps the MQTT connection, reconnecting with full-jitter exponential backoff.

The outbox is opened before any task starts and closed after all have ended, so nothing
is ever acknowledged to a device or to the broker against a closed database.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from dataclasses import dataclass
from typing import Any, Final

import structlog

from agent import keys
from agent.ble.sessions import SESSIONS
from agent.ble.stack import BleStack
from agent.ble.uuids import PLX_CONTINUOUS_MEASUREMENT
from agent.cancellation import raise_if_cancelled
from agent.config import Config, DeviceConfig
from agent.errors import (
    BleLinkError,
    BleLinkLostError,
    DecodeError,
    DeviceError,
    HubError,
    IntegrityError,
    KeyMaterialError,
    LocalError,
    StorageError,
    UplinkError,
)
from agent.ingest import Signer, prepare
from agent.ingest_batcher import Item, Status, collect_batch, commit_batch
from agent.logs import device_label
from agent.measurement import RawMeasurement
from agent.normalize.device import DeviceFacts
from agent.normalize.phd import Context
from agent.outbox import Outbox, StorageLevel, open_or_quarantine, peek_counts, storage_level
from agent.sealing import Sealer
from agent.uplink import Uplink, UplinkSettings

log = structlog.get_logger(__name__)

INGEST_QUEUE_MAX: Final = 256
"""Raw measurements waiting to be stored. The stack confirms an indication as soon as the
callback returns (BlueZ and Bumble alike), so this queue does not hold confirmations back; a
full queue makes the BLE session buffer (bounded) until ingest catches up."""

BLE_REOPEN_DELAY_S: Final = 5.0
"""Pause before reopening a BLE stack that failed to open (adapter gone, HCI not up)."""

STORAGE_RETRY_S: Final = 5.0
"""Pause before the publisher tries the outbox again after a storage error (disk full or
failing): long enough not to spin on a dead disk, short next to any delivery deadline."""

DEGRADED_CONTINUOUS_INTERVAL_S: Final = 15 * 60.0
"""Under quota pressure continuous oximetry keeps one sample per device per 15 minutes (its
summary series) instead of one per minute: spot-checks and every other clinical kind are
still all kept, and no stored record is ever deleted unsent."""

PUBLISH_WINDOW: Final = 20
"""Records in flight at once: paho's default ``max_inflight_messages`` (performance-anchors)."""


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A raw measurement together with the device it came from."""

    device: DeviceFacts
    label: str  #: for logs: the last two address octets
    device_key: str  #: the configured label: names the device's sync state in the outbox
    raw: RawMeasurement


def _open_keys(cfg: Config) -> tuple[Sealer, Signer]:
    """Open the key provider; load (or, on a fresh hub, create) the data key through it.

    The provider (``[keys]``: a KEK file or a PKCS#11 token) also signs: with ``pkcs11``
    the signing key never leaves the token. See :func:`agent.keys.open_data_key`.
    """
    provider = keys.open_provider(cfg)
    try:
        data_key = keys.open_data_key(cfg, provider)
        signer = Signer.from_provider(provider)
    except BaseException:
        provider.close()
        raise
    return Sealer(data_key), signer


def open_outbox(cfg: Config) -> tuple[Outbox, Signer]:
    """Open the keys and the outbox as the daemon does."""
    try:
        cfg.outbox.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        # The state directory is missing and cannot be made (read-only or full disk, a file
        # in its place): a storage fault the daemon waits out, not a reason to crash-loop.
        raise StorageError(
            str(cfg.outbox.path), "open", f"state directory: {exc.strerror}"
        ) from None
    sealer, signer = _open_keys(cfg)
    outbox = open_or_quarantine(
        cfg.outbox.path, sealer, cfg.hub.id, quota_bytes=cfg.outbox.quota_bytes
    )
    return outbox, signer


def status(cfg: Config) -> dict[str, Any]:
    """What ``homehub status`` prints: outbox depth and age, bytes used against the quota."""
    counts = peek_counts(cfg.outbox.path)
    quota = cfg.outbox.quota_bytes
    return {
        "hub": cfg.hub.id,
        "outbox": {
            "pending": counts.pending,
            "in_flight": counts.in_flight,
            "damaged": counts.damaged,
            "oldest_age_s": counts.oldest_age_s,
            "used_bytes": counts.used_bytes,
            "quota_bytes": quota,
            "storage": storage_level(counts.used_bytes, quota).value,
        },
    }


class Hub:
    """The running agent. ``await Hub(cfg).run(stop)`` returns once ``stop`` is set."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._queue: asyncio.Queue[_Arrival] = asyncio.Queue(maxsize=INGEST_QUEUE_MAX)
        self._wake = asyncio.Event()
        self.stored = 0
        self.delivered = 0
        self.rejected = 0
        self.duplicates = 0
        self._outbox: Outbox | None = None
        self._last_continuous: dict[str, float] = {}
        self.shed_continuous = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task until ``stop`` is set, then close cleanly."""
        cfg = self.cfg
        opened = await self._open_outbox_when_possible(stop)
        if opened is None:
            return
        outbox, signer = opened
        self._outbox = outbox
        released = outbox.release_in_flight()
        counts = outbox.counts()
        log.info(
            "hub_started",
            hub=cfg.hub.id,
            devices=len(cfg.devices),
            pending=counts.pending,
            released=released,
        )
        uplink = Uplink(UplinkSettings.from_config(cfg))
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(uplink.run(), name="hub.uplink"),
                    tg.create_task(self._publisher(outbox, uplink), name="hub.publisher"),
                    tg.create_task(self._ingest(outbox, signer), name="hub.ingest"),
                    tg.create_task(self._collector(), name="hub.collector"),
                ]
                await stop.wait()
                log.info("hub_stopping")
                await uplink.close()  # a clean DISCONNECT before the tasks go
                for task in tasks:
                    task.cancel()
        finally:
            await uplink.close()  # idempotent; a no-op after the clean stop above
            outbox.close()
            log.info(
                "hub_stopped",
                stored=self.stored,
                delivered=self.delivered,
                rejected=self.rejected,
                duplicates=self.duplicates,
            )

    async def _open_outbox_when_possible(self, stop: asyncio.Event) -> tuple[Outbox, Signer] | None:
        """Open keys and outbox; while the disk fails transiently (full, I/O error), wait.

        Exiting instead would make systemd restart us into the same failure: a crash loop
        that wears the flash and floods the journal. Key and corruption problems that waiting
        cannot fix still end the start with their error.
        """
        while True:
            try:
                return open_outbox(self.cfg)
            except StorageError as exc:
                if not exc.retryable:
                    raise
                log.error(
                    "outbox_open_failed",
                    error=type(exc).__name__,
                    reason=exc.reason,
                    retry_in_s=STORAGE_RETRY_S,
                )
            try:
                async with asyncio.timeout(STORAGE_RETRY_S):
                    await stop.wait()
                return None
            except TimeoutError:
                continue

    # -- collecting ---------------------------------------------------------------------

    async def _collector(self) -> None:
        while True:
            try:
                async with BleStack.open(self.cfg.ble.stack) as ble:
                    while True:
                        for device in self.cfg.devices:
                            await self._session(ble, device)
                            raise_if_cancelled()  # a stop must not be lost in a session
                        await asyncio.sleep(self.cfg.ble.cycle_interval_s)
            except BleLinkError as exc:
                # The adapter (or the virtual radio's HCI port) is not there: try again.
                log.warning("ble_stack_unavailable", reason=exc.reason)
                await asyncio.sleep(BLE_REOPEN_DELAY_S)

    async def _session(self, ble: BleStack, device: DeviceConfig) -> None:
        label = device_label(device.address)
        bound = log.bind(device=label, kind=device.kind)

        async def on_measurement(raw: RawMeasurement, info: DeviceFacts) -> None:
            await self._queue.put(_Arrival(info, label, device.label, raw))

        def sync_state(key: str) -> bytes | None:
            return self._outbox.get_sync_state(device.label, key) if self._outbox else None

        session = SESSIONS[device.kind]
        try:
            # Each session's own deadline (ble.session_timeout_s) ends the radio part and
            # still hands on everything received; an outer cancellation would drop readings
            # the device already saw confirmed.
            outcome = await session(ble, device, on_measurement, self.cfg.ble, sync_state)
            bound.info(
                "ble_session_done", measurements=outcome.measurements, ended_by=outcome.ended_by
            )
        except BleLinkLostError as exc:
            # Many cuffs hang up themselves after their transfer; bleak gives no reason, so a
            # drop after measurements is most likely that. What was received is handed on.
            level = bound.info if exc.measurements > 0 else bound.warning
            level("ble_session_link_lost", phase=exc.phase, measurements=exc.measurements)
        except BleLinkError as exc:
            bound.info("ble_session_failed", reason=exc.reason)
        except DeviceError as exc:
            bound.warning("ble_device_misbehaved", error=type(exc).__name__, reason=str(exc))

    # -- storing ------------------------------------------------------------------------

    async def _ingest(self, outbox: Outbox, signer: Signer) -> None:
        while True:
            # Group commit: what arrives within GROUP_COMMIT_WINDOW_S shares one transaction.
            arrivals = await collect_batch(self._queue)
            self._store_batch(outbox, signer, arrivals)

    def _store_batch(self, outbox: Outbox, signer: Signer, arrivals: list[_Arrival]) -> None:
        """Decode, normalize and store ``arrivals`` in one outbox transaction; count and log.

        Storage faults (disk full, I/O error, quota) are logged per reading as
        ``measurement_not_stored`` and never counted as stored; the task carries on.
        """
        cfg = self.cfg
        items: list[Item] = []
        labels: list[str] = []
        for arrival in arrivals:
            if self._shed_continuous(outbox, arrival):
                continue
            ctx = Context(
                hub_id=cfg.hub.id,
                patient_id=cfg.patient.id,
                timezone=cfg.hub.timezone,
                received=arrival.raw.received_wall,
            )
            try:
                prepared = prepare(arrival.raw, arrival.device, ctx)
            except DecodeError as exc:
                self.rejected += 1
                log.warning(
                    "measurement_rejected",
                    device=arrival.label,
                    characteristic=exc.characteristic,
                    reason=exc.reason,
                    offset=exc.offset,
                )
                continue
            # The reading and the sync state it advances commit in one transaction.
            sync = {(arrival.device_key, k): v for k, v in arrival.raw.sync_state.items()}
            maker = functools.partial(prepared.envelope, signer=signer)
            items.append(Item(prepared.kind, prepared.identifier, maker, sync))
            labels.append(arrival.label)
        for label, outcome in zip(labels, commit_batch(outbox, items), strict=True):
            bound = log.bind(device=label)
            if outcome.status is Status.NOT_STORED:
                # Not stored: the device's confirmation already went out (BlueZ confirms
                # before we commit), so this is logged loudly; devices with memory resend.
                error = outcome.error
                bound.error(
                    "measurement_not_stored",
                    error=type(error).__name__,
                    operation=getattr(error, "operation", "append"),
                    reason=str(getattr(error, "reason", error)),
                )
            elif outcome.status is Status.DUPLICATE:
                self.duplicates += 1
                bound.info("measurement_duplicate", seq=outcome.seq)
            else:
                self.stored += 1
                bound.info("measurement_stored", seq=outcome.seq)
                self._wake.set()

    def _shed_continuous(self, outbox: Outbox, arrival: _Arrival) -> bool:
        """Whether to drop this continuous-oximetry sample because storage is under pressure."""
        if arrival.raw.characteristic_uuid.lower() != PLX_CONTINUOUS_MEASUREMENT:
            return False
        now = arrival.raw.received_monotonic
        last = self._last_continuous.get(arrival.device_key)
        if (
            outbox.level is not StorageLevel.OK
            and last is not None
            and now - last < DEGRADED_CONTINUOUS_INTERVAL_S
        ):
            self.shed_continuous += 1
            log.warning("continuous_sample_shed", device=arrival.label, level=outbox.level.value)
            return True
        self._last_continuous[arrival.device_key] = now
        return False

    # -- publishing ---------------------------------------------------------------------

    async def _publisher(self, outbox: Outbox, uplink: Uplink) -> None:
        while True:
            await uplink.connected.wait()
            try:
                released = outbox.release_in_flight()
                if released:
                    log.info("outbox_released", records=released)
                await self._drain(outbox, uplink)
            except* UplinkError as group:
                first = group.exceptions[0]
                log.info("publish_interrupted", reason=str(first))
                await uplink.disconnected_or_reconnected()
            except* StorageError as group:
                # Disk full or failing: what was published stays in flight and is sent again
                # (same bytes) once the disk answers; the process keeps running.
                error = group.exceptions[0]
                assert isinstance(error, StorageError)
                log.error(
                    "outbox_unavailable",
                    error=type(error).__name__,
                    operation=error.operation,
                    reason=error.reason,
                    retry_in_s=STORAGE_RETRY_S,
                )
                await asyncio.sleep(STORAGE_RETRY_S)
            except* IntegrityError as damaged:
                # A record that no longer opens (tampered, or sealed under an erased key) is
                # already set aside as damaged by claim(), which logged it; the others go on
                # being delivered.
                log.error("outbox_claim_skipped_damaged", errors=len(damaged.exceptions))

    async def _drain(self, outbox: Outbox, uplink: Uplink) -> None:
        while True:
            self._wake.clear()
            records = outbox.claim(PUBLISH_WINDOW)
            if not records:
                await self._wake.wait()
                continue
            async with asyncio.TaskGroup() as tg:
                for record in records:
                    tg.create_task(
                        self._publish_one(outbox, uplink, record.seq, record.body),
                        name=f"hub.publish[{record.seq}]",
                    )

    async def _publish_one(self, outbox: Outbox, uplink: Uplink, seq: int, body: bytes) -> None:
        await uplink.publish(body)
        outbox.mark_delivered(seq)
        self.delivered += 1
        log.info("measurement_delivered", seq=seq)


def main(cfg: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit code for ``homehub run``."""

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Hub(cfg).run(stop)

    try:
        asyncio.run(_main())
    except (HubError, BaseExceptionGroup) as exc:
        errors = _leaves(exc)
        hub_errors = [e for e in errors if isinstance(e, HubError)]
        if len(hub_errors) != len(errors):
            raise  # not ours: a bug; let the traceback (no PHI: values stay in locals) show it
        for error in hub_errors:
            log.error("hub_failed", error=type(error).__name__, reason=str(error))
        refused = all(isinstance(e, LocalError | KeyMaterialError) for e in hub_errors)
        return 2 if refused else 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


__all__ = ["Hub", "main", "open_outbox", "status"]
