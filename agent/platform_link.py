"""The platform side of the running daemon: commands, replies, status, events, dictionaries
and the certificate switch-over (docs/platform-protocol.md; issue 9).

:class:`PlatformLink` is made by the daemon when ``[platform] cert_file`` is set (a platform
that speaks this protocol: without its key no command can verify, and nobody reads status or
events); without it the daemon runs as before. It runs as the named task ``hub.platform``.

Commands (:mod:`agent.commands`): the uplink hands every message on ``commands`` to
:meth:`PlatformLink._on_command`, one at a time. The :class:`~agent.commands.CommandDesk`
verifies, remembers the nonce, carries out what is done on files and signs the reply, all on
the storage thread (fsync, signing: never on the loop). Then, on the loop: a refused command's
``security`` event is reported (:func:`agent.security.report_security`, counted by the
daemon); the reply is published on ``replies`` (waiting for its PUBACK, bounded); and an
accepted command is acted on:

- ``sync_now``: the publisher is woken;
- ``report_status``: the status is published now;
- ``announce``: the dictionary ids are written to the state file (below) and
  :meth:`PlatformLink.dictionary` returns the highest announced one the hub ships;
- ``install_certificate``: once the reply is out, the installed certificate is promoted
  (:func:`agent.cert_rotation.promote`) and the uplink reconnects with it. The first
  connection after that confirms it (the old pair deleted); a refusal of the new pair
  (TLS or CONNACK) reverts to the old pair and reconnects. A switch-over pending at start
  (a crash between promote and the verdict) is judged by the first connection the same way,
  after :func:`agent.cert_rotation.recover` repaired a half-done rename.

Status (:mod:`agent.status_messages`): ``online`` with the outbox counts after every
connection, on ``report_status`` and every :data:`STATUS_INTERVAL_S`; retained where the
profile keeps retained messages (the uplink's profile decides). The ``offline`` status is the
last will, signed before each connection attempt, and is also published on a clean stop.

Events: raised by what the daemon already notices (the outbox at 90 % of its quota or full,
a device's battery at or below :data:`BATTERY_LOW_PCT` %, the hub's clock implausible, every
``security`` event, a quarantined outbox file or records set aside as damaged), gated by
:class:`~agent.status_messages.EventGate` (one per kind and source an hour, a battery once a
device a day, at most 32 waiting), signed on the storage thread and published when connected.
Events are best effort: they wait in memory only, so a crash or a power cut loses those not
yet sent; they never hold up a reading.

State file ``<hub.state_dir>/platform_state`` (0600, replaced atomically with an fsync): the
announced dictionary ids and how many quarantined outbox files were reported. Unreadable, it
is logged (``platform_state_unreadable``) and the hub starts as if nothing was announced:
plain envelopes, which every platform reads.

Logged: ``platform_link_started``, ``dictionaries_announced``, ``certificate_promoted``,
``certificate_confirmed``, ``certificate_reverted``, ``certificate_switch_failed``,
``platform_reply_not_sent``, ``platform_status_sent``, ``platform_event_queued``,
``platform_event_sent``, ``platform_message_not_sent``, ``platform_state_unreadable``:
fields only, never a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import structlog

from agent import cert_rotation, cose, dictionaries
from agent.ble.current_time import hub_clock_plausible
from agent.ble.gatt_session import BATTERY_SYNC_KEY
from agent.cert_rotation import CertificateSlots
from agent.commands import (
    Action,
    Announce,
    CommandDesk,
    InstallCertificate,
    ReportStatus,
    SyncNow,
)
from agent.config import Config
from agent.dictionaries import Dictionary
from agent.errors import (
    CertificateRefusedError,
    DecodeError,
    HubError,
    KeyMaterialError,
    StorageError,
)
from agent.ingest import HubSigner, Signer, SwitchableSigner
from agent.modem.status import ModemStatus
from agent.outbox import Outbox, OutboxCounts, StorageLevel
from agent.private_files import read_private_file_up_to
from agent.profiles import MessageKind
from agent.security import SecurityEvent, SecuritySink, report_security
from agent.status_messages import (
    Event,
    EventGate,
    EventKind,
    HubStatus,
    build_event,
    build_status,
    modem_figures,
)
from agent.storage import StorageThread
from agent.uplink import InboundMessage, Refusal
from drivers.battery import BatteryLevel

log = structlog.get_logger(__name__)

STATUS_INTERVAL_S: Final = 3600.0
"""An ``online`` status an hour besides those after each connection and on request: about
200 bytes an hour on a metered SIM, and the platform sees the outbox's depth at least hourly."""

PUBLISH_TIMEOUT_S: Final = 10.0
"""How long a reply, status or event may wait for its PUBACK before it counts as not sent:
the uplink's own PUBACK timeout (30 s) drops a stuck connection; we give up sooner on
best-effort messages so the next ones are not held."""

GOODBYE_TIMEOUT_S: Final = 0.5
"""On a clean stop, how long the ``offline`` status may take (inner to the daemon's stop
budget; it overlaps the publisher's drain)."""

BATTERY_LOW_PCT: Final = 10
"""A device battery at or below this level raises ``battery_low``."""

STATE_FILE: Final = "platform_state"
MAX_STATE_BYTES: Final = 4096


class PlatformUplink(Protocol):
    """What the link needs of :class:`agent.uplink.Uplink`."""

    def on_message(
        self, kind: MessageKind | str, handler: Callable[[InboundMessage], Awaitable[None]]
    ) -> None: ...

    def publish_message(
        self, kind: MessageKind | str, payload: bytes, *, retain: bool = False
    ) -> asyncio.Future[None]: ...

    async def reconnect(self) -> None: ...

    def on_connected(self, observer: Callable[[], None]) -> None: ...

    def on_refused(self, observer: Callable[[Refusal], None]) -> None: ...

    def set_last_will(self, last_will: Callable[[], bytes | None] | None) -> None: ...

    @property
    def connected(self) -> asyncio.Event: ...


@dataclass(frozen=True, slots=True)
class PlatformState:
    """What the state file holds."""

    dictionaries: tuple[int, ...] = ()
    quarantined_files: int = 0

    def to_bytes(self) -> bytes:
        body = {
            "v": 1,
            "dictionaries": list(self.dictionaries),
            "quarantined_files": self.quarantined_files,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PlatformState:
        """Raises ``ValueError`` for anything but the file this module writes."""
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError("not a version 1 platform state")
        ids = body.get("dictionaries")
        files = body.get("quarantined_files")
        if not isinstance(ids, list) or not all(type(i) is int and i > 0 for i in ids):
            raise ValueError("dictionaries is not a list of ids")
        if type(files) is not int or files < 0:
            raise ValueError("quarantined_files is not a count")
        return cls(tuple(sorted(set(ids)))[:64], files)


def read_state(path: Path) -> PlatformState:
    """The state file, or an empty state when it is missing or unreadable (logged)."""
    try:
        data = read_private_file_up_to(path, f"platform state {path}", MAX_STATE_BYTES)
        return PlatformState() if data is None else PlatformState.from_bytes(data)
    except (KeyMaterialError, ValueError) as exc:
        log.warning("platform_state_unreadable", error=type(exc).__name__)
        return PlatformState()


def write_state(path: Path, state: PlatformState) -> None:
    """Replace the state file atomically (fsync), 0600.

    Raises:
        StorageError: it cannot be written.
    """
    try:
        cert_rotation.write_private_file(path, state.to_bytes(), "platform state")
    except KeyMaterialError as exc:
        raise StorageError(str(path), "write", exc.reason) from None


def count_quarantined(outbox_path: Path) -> int:
    """How many corrupt outbox files :func:`agent.outbox.quarantine` moved aside."""
    try:
        names = [p.name for p in outbox_path.parent.glob(f"{outbox_path.name}.corrupt-*")]
    except OSError:
        return 0
    return sum(1 for n in names if not n.endswith(("-wal", "-shm")))


@dataclass(frozen=True, slots=True)
class _Started:
    desk: CommandDesk
    state: PlatformState
    shipped: Mapping[int, Dictionary]
    quarantined_now: int
    will: bytes


class PlatformLink:
    """See the module docstring. Build with :meth:`start` (before the uplink runs), run
    :meth:`run` as the task ``hub.platform``, end with :meth:`stop`."""

    def __init__(
        self,
        cfg: Config,
        *,
        storage: StorageThread,
        outbox: Outbox,
        signer: SwitchableSigner,
        uplink: PlatformUplink,
        started: _Started,
        wake_publisher: Callable[[], None],
        awaiting_receipt: Callable[[], int],
        security_sink: SecuritySink,
        budget: Callable[[], str | None] | None,
        modem: Callable[[], ModemStatus] | None,
        clock: Callable[[], float],
        hub_clock_problem: Callable[[], str | None],
        status_interval_s: float,
    ) -> None:
        self.cfg = cfg
        self._storage = storage
        self._outbox = outbox
        self._signer = signer
        self._uplink = uplink
        self._desk = started.desk
        self._state = started.state
        self._shipped = started.shipped
        self._state_path = cfg.hub.state_dir / STATE_FILE
        self._slots = CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file)
        self._wake_publisher = wake_publisher
        self._awaiting_receipt = awaiting_receipt
        self._security_sink = security_sink
        self._budget = budget
        self._modem = modem
        self._clock = clock
        self._hub_clock_problem = hub_clock_problem
        self._status_interval_s = status_interval_s
        self._kinds = {d.label: d.kind for d in cfg.devices}
        self.gate = EventGate()
        self._will: bytes | None = started.will
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._status_due = False
        self._connects = 0
        self._refusals = 0
        self._judged_connects = 0
        self._judged_refusals = 0
        """Connections and refusals seen by the observers, and up to which the certificate
        on trial (if any) was judged: a verdict counts only from after the promotion."""
        self._damaged_seen: int | None = None
        self.replies_sent = 0
        self.statuses_sent = 0
        self.events_sent = 0
        self.not_sent = 0
        self.certificate_switches = 0
        self.certificate_reverts = 0
        if started.quarantined_now > started.state.quarantined_files:
            self.raise_event(
                Event(
                    EventKind.OUTBOX_QUARANTINED,
                    "file",
                    {
                        "what": "file",
                        "count": started.quarantined_now - started.state.quarantined_files,
                    },
                )
            )

    # -- building ------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        cfg: Config,
        *,
        storage: StorageThread,
        outbox: Outbox,
        signer: SwitchableSigner,
        uplink: PlatformUplink,
        wake_publisher: Callable[[], None],
        awaiting_receipt: Callable[[], int],
        security_sink: SecuritySink,
        budget: Callable[[], str | None] | None = None,
        modem: Callable[[], ModemStatus] | None = None,
        clock: Callable[[], float] = time.time,
        hub_clock_problem: Callable[[], str | None] | None = None,
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> PlatformLink | None:
        """The link of the configured hub (``None`` without ``[platform] cert_file``), its
        command handler registered with ``uplink`` (call before ``uplink.run()``).

        On the storage thread: the command desk (platform certificate, nonce file), a
        certificate switch-over half done by a crash repaired
        (:func:`agent.cert_rotation.recover`), the state file read and the quarantined
        outbox files counted (and the state file updated), the shipped dictionaries loaded
        and the first ``offline`` will signed.

        Raises:
            KeyMaterialError: the platform certificate or the client key pair is unusable.
        """
        if cfg.platform.cert_file is None:
            return None
        started = await storage.call(_open, cfg, signer, clock)
        link = cls(
            cfg,
            storage=storage,
            outbox=outbox,
            signer=signer,
            uplink=uplink,
            started=started,
            wake_publisher=wake_publisher,
            awaiting_receipt=awaiting_receipt,
            security_sink=security_sink,
            budget=budget,
            modem=modem,
            clock=clock,
            hub_clock_problem=hub_clock_problem or _hub_clock_implausible,
            status_interval_s=status_interval_s,
        )
        uplink.on_message(MessageKind.COMMANDS, link._on_command)
        uplink.on_connected(link._on_connected)
        uplink.on_refused(link._on_refused)
        uplink.set_last_will(link.last_will)
        log.info(
            "platform_link_started",
            dictionaries=list(started.state.dictionaries),
            in_use=link.dictionary_id,
        )
        return link

    # -- what the daemon and the publisher ask -------------------------------------------

    @property
    def dictionary_id(self) -> int | None:
        """The id of :meth:`dictionary`."""
        usable = [i for i in self._state.dictionaries if i in self._shipped]
        return max(usable) if usable else None

    def dictionary(self) -> Dictionary | None:
        """The dictionary to compress with: the highest announced id the hub ships, or
        ``None`` (plain envelopes) while the platform announced none of them."""
        dictionary_id = self.dictionary_id
        return None if dictionary_id is None else self._shipped[dictionary_id]

    @property
    def announced(self) -> tuple[int, ...]:
        return self._state.dictionaries

    def last_will(self) -> bytes | None:
        """The ``offline`` status for the next CONNECT's will (signed after each connection;
        the uplink's ``last_will`` hook)."""
        return self._will

    # -- events ----------------------------------------------------------------------------

    def raise_event(self, event: Event) -> None:
        """Queue ``event`` for sending (gated; never blocks, never raises for a full queue)."""
        if self.gate.offer(event, time.monotonic()):
            log.info("platform_event_queued", kind=event.kind.value, source=event.source)
            self._wake.set()

    def security(self, event: SecurityEvent) -> None:
        """A ``security`` event (already logged and counted by the daemon)."""
        source = event.source[:32]
        self.raise_event(
            Event(EventKind.SECURITY, source, {"source": source, "check": event.check[:64]})
        )

    def after_commit(self, committed: Sequence[tuple[str, str, Mapping[str, bytes]]]) -> None:
        """After an ingest commit (on the loop): ``(device key, log label, sync state)`` of
        each committed arrival; looks for a low battery and the outbox's quota level."""
        for device_key, label, sync_state in committed:
            value = sync_state.get(BATTERY_SYNC_KEY)
            if value is None:
                continue
            try:
                pct = BatteryLevel.from_bytes(value).level_pct
            except DecodeError:
                continue
            if pct <= BATTERY_LOW_PCT:
                self.raise_event(
                    Event(
                        EventKind.BATTERY_LOW,
                        device_key,
                        {
                            "device": label,
                            "kind": self._kinds.get(device_key, "unknown"),
                            "battery_pct": pct,
                        },
                    )
                )
        self.note_storage_level(self._outbox.level)

    def note_storage_level(self, level: StorageLevel) -> None:
        if level is not StorageLevel.OK:
            self.raise_event(Event(EventKind.STORAGE_CRITICAL, "outbox", {"level": level.value}))

    def check_clock(self) -> None:
        """Raise ``clock_unsynced`` when the hub's clock is not to be trusted (rate-limited
        by the event gate); also called when the cellular link has news of the network's
        time."""
        problem = self._hub_clock_problem()
        if problem is not None:
            self.raise_event(Event(EventKind.CLOCK_UNSYNCED, "hub", {"check": problem}))

    # -- commands ---------------------------------------------------------------------------

    async def _on_command(self, message: InboundMessage) -> None:
        """One message on ``commands`` (the uplink's dispatcher, one at a time)."""
        handled = await self._storage.call(self._desk.handle, message.payload)
        if handled.security_event is not None:
            report_security(handled.security_event, self._security_sink)
        if handled.reply is not None and await self._publish(MessageKind.REPLIES, handled.reply):
            self.replies_sent += 1
        if handled.ok and handled.command is not None:
            await self._act(handled.command.action)

    async def _act(self, action: Action) -> None:
        if isinstance(action, SyncNow):
            self._wake_publisher()
        elif isinstance(action, ReportStatus):
            self.request_status()
        elif isinstance(action, Announce):
            await self._announce(action.dictionary_ids)
        elif isinstance(action, InstallCertificate):
            await self._switch_certificate()

    def request_status(self) -> None:
        """Publish the ``online`` status as soon as connected."""
        self._status_due = True
        self._wake.set()

    async def _announce(self, ids: tuple[int, ...]) -> None:
        state = PlatformState(ids, self._state.quarantined_files)
        try:
            await self._storage.call(write_state, self._state_path, state)
        except StorageError as exc:
            # Still taken for this run: the next start sends plain envelopes again (safe).
            log.error("platform_state_not_written", reason=exc.reason)
        self._state = state
        log.info("dictionaries_announced", dictionaries=list(ids), in_use=self.dictionary_id)
        self.request_status()

    async def _switch_certificate(self) -> None:
        try:
            await self._storage.call(cert_rotation.promote, self._slots)
        except (CertificateRefusedError, KeyMaterialError) as exc:
            log.error("certificate_switch_failed", error=type(exc).__name__)
            return
        # Only a connection or refusal after this one judges the new pair.
        self._judged_connects, self._judged_refusals = self._connects, self._refusals
        self.certificate_switches += 1
        log.info("certificate_promoted")
        await self._uplink.reconnect()

    def _on_connected(self) -> None:
        """The uplink's ``on_connected`` observer (on the loop, quick): the task confirms a
        certificate on trial and publishes the status."""
        self._connects += 1
        self._status_due = True
        self._wake.set()

    def _on_refused(self, refusal: Refusal) -> None:
        """The uplink's ``on_refused`` observer: a refusal of the hub's own certificate
        reverts one on trial (in the task)."""
        if refusal.of_client_certificate:
            self._refusals += 1
            self._wake.set()

    async def _judge_certificate(self) -> None:
        """Confirm a certificate on trial after a connection, revert it after a refusal."""
        connected = self._connects > self._judged_connects
        refused = self._refusals > self._judged_refusals
        if not (connected or refused):
            return
        self._judged_connects, self._judged_refusals = self._connects, self._refusals
        try:
            if not await self._storage.call(cert_rotation.on_trial, self._slots):
                return
            if connected:
                # The new key signs before the rotation is off trial: whoever sees it
                # confirmed sees readings signed with it.
                await self._storage.call(self._follow_certificate_key)
                await self._storage.call(cert_rotation.confirm, self._slots)
                log.info("certificate_confirmed")
                return
            await self._storage.call(cert_rotation.revert, self._slots)
        except KeyMaterialError as exc:
            log.error("certificate_switch_failed", error=type(exc).__name__, reason=exc.reason)
            return
        self.certificate_reverts += 1
        log.warning("certificate_reverted")
        await self._uplink.reconnect()

    def _follow_certificate_key(self) -> None:
        """On the storage thread, after a confirmed rotation: when the TLS key file is also
        the signing key file, sign with the new key from now on (no restart needed).

        Not with a PKCS#11 provider (its signing key lives in the token; a rotation of the
        TLS files does not touch it). A key that does not load keeps the old one (logged):
        the old certificate is still valid, and the next start loads the file again.
        """
        cfg = self.cfg
        if cfg.keys.provider == "pkcs11" or not _same_file(cfg.signing.key_file, cfg.mqtt.key_file):
            return
        try:
            key = cose.load_signing_key(cfg.signing.key_file)
        except KeyMaterialError as exc:
            log.error("signing_key_not_switched", error=type(exc).__name__, reason=exc.reason)
            return
        new = Signer.from_key(key)
        if new.kid == self._signer.kid:
            return
        self._signer.replace(new)
        log.info("signing_key_switched", kid=new.kid.hex()[:8])

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Send the status and events while connected, until :meth:`stop`; then the
        ``offline`` status when still connected."""
        self.check_clock()
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self._status_interval_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_status - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                break
            await self._judge_certificate()
            if loop.time() >= next_status:
                next_status = loop.time() + self._status_interval_s
                self.check_clock()
                self._status_due = True
            if not self._uplink.connected.is_set():
                continue  # the connected observer wakes us
            await self._send_due()
        if self._uplink.connected.is_set():
            with contextlib.suppress(TimeoutError, HubError):
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    offline = await self._storage.call(self._sign_status, None)
                    await self._uplink.publish_message(MessageKind.STATUS, offline, retain=True)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _send_due(self) -> None:
        if self._status_due:
            self._status_due = False
            await self._send_status()
        while self._uplink.connected.is_set() and not self._stopping.is_set():
            event = self.gate.take()
            if event is None:
                break
            iat = int(self._clock())
            message = await self._storage.call(
                build_event, hub_id=self.cfg.hub.id, iat=iat, event=event, signer=self._signer
            )
            if await self._publish(MessageKind.EVENTS, message):
                self.events_sent += 1
                log.info("platform_event_sent", kind=event.kind.value, source=event.source)

    async def _send_status(self) -> None:
        try:
            counts: OutboxCounts = await self._storage.call_low(self._outbox.counts)
        except StorageError as exc:
            log.warning("platform_status_not_built", reason=exc.reason)
            return
        if self._damaged_seen is not None and counts.damaged > self._damaged_seen:
            self.raise_event(
                Event(
                    EventKind.OUTBOX_QUARANTINED,
                    "records",
                    {"what": "records", "count": counts.damaged - self._damaged_seen},
                )
            )
        self._damaged_seen = counts.damaged
        self.note_storage_level(self._outbox.level)
        dictionary_id = self.dictionary_id
        status = HubStatus(
            pending=counts.pending,
            refused=counts.refused,
            damaged=counts.damaged,
            oldest_age_s=counts.oldest_age_s,
            awaiting_receipt=self._awaiting_receipt(),
            budget=self._budget() if self._budget is not None else None,
            dictionaries=() if dictionary_id is None else (dictionary_id,),
            modem=None if self._modem is None else modem_figures(self._modem().to_dict()),
        )
        online = await self._storage.call(self._sign_status, status)
        if await self._publish(MessageKind.STATUS, online, retain=True):
            self.statuses_sent += 1
            log.info("platform_status_sent", pending=counts.pending, refused=counts.refused)
        # The will of the next connection, signed now (its iat says since when it is known).
        self._will = await self._storage.call(self._sign_status, None)

    def _sign_status(self, status: HubStatus | None) -> bytes:
        """On the storage thread."""
        return build_status(
            hub_id=self.cfg.hub.id, iat=int(self._clock()), status=status, signer=self._signer
        )

    async def _publish(self, kind: MessageKind, payload: bytes, *, retain: bool = False) -> bool:
        """Publish one best-effort message; whether its PUBACK came (else logged)."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._uplink.publish_message(kind, payload, retain=retain)
        except (TimeoutError, HubError) as exc:
            self.not_sent += 1
            log.warning("platform_message_not_sent", kind=kind.value, error=type(exc).__name__)
            return False
        return True


def _hub_clock_implausible() -> str | None:
    """The default clock check: ``"implausible"`` when the hub's clock is before its floor."""
    return None if hub_clock_plausible() else "implausible"


def _same_file(a: Path, b: Path) -> bool:
    """Whether two configured paths name one file (resolved; a missing one is not)."""
    try:
        return a.resolve(strict=True) == b.resolve(strict=True)
    except OSError:
        return False


def _open(cfg: Config, signer: HubSigner, clock: Callable[[], float]) -> _Started:
    """On the storage thread: what :meth:`PlatformLink.start` reads and repairs."""
    desk = CommandDesk.from_config(cfg, signer, clock=clock)
    if desk is None:  # pragma: no cover - checked by the caller
        raise KeyMaterialError("platform certificate", "not configured")
    slots = CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file)
    if cert_rotation.recover(slots):
        log.warning("certificate_pair_recovered")
    path = cfg.hub.state_dir / STATE_FILE
    state = read_state(path)
    quarantined = count_quarantined(cfg.outbox.path)
    if quarantined != state.quarantined_files:
        with contextlib.suppress(StorageError):  # reported again next start: acceptable
            write_state(path, PlatformState(state.dictionaries, quarantined))
    try:
        shipped = dictionaries.load()
    except (HubError, OSError) as exc:
        log.error("dictionaries_unusable", error=type(exc).__name__)
        shipped = {}
    will = build_status(hub_id=cfg.hub.id, iat=int(clock()), status=None, signer=signer)
    return _Started(desk, state, shipped, quarantined, will)


__all__ = [
    "BATTERY_LOW_PCT",
    "STATUS_INTERVAL_S",
    "PlatformLink",
    "PlatformState",
    "PlatformUplink",
    "count_quarantined",
    "read_state",
    "write_state",
]
