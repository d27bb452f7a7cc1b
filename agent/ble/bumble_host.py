"""The Bumble host: one ``bumble.device.Device`` per HCI transport, shared by scanner and clients.

The hub's bleak backend (:mod:`agent.ble.bumble_backend`) does not own a Bluetooth stack per
scanner or client, as BlueZ is one daemon for every bleak object; here one
:class:`BumbleHost` plays that role for one HCI transport (``tcp-client:127.0.0.1:7001``,
``usb:0``, ``serial:/dev/ttyACM0``, … any Bumble transport spec). It is opened once, powered
on with a fixed random static address (Core Spec Vol 6 Part B §1.3.2.1: the two most
significant bits are ``0b11``), and closed at shutdown.

Theory of operation
-------------------
- :func:`bumble_host` is the async context manager that opens a host and registers it under
  its transport spec; a nested ``bumble_host`` for the same spec shares it (reference count).
  The bleak backend classes look the host up with :func:`registered_host`.
- Scanning is reference-counted too: the first scan listener starts an active scan, the last
  one to leave stops it, and each advertisement is fanned out to every listener.
- A lost transport (the HCI socket closed) makes Bumble emit a flush, which ends every
  connection with a disconnection event; the host is then *lost*, and the next
  :meth:`BumbleHost.ensure_ready` reopens the transport (bounded by
  :data:`HCI_OPEN_TIMEOUT_S`), so a restarted radio does not need a restarted daemon.
- Peers seen while scanning are remembered (address type and name, at most
  :data:`MAX_REMEMBERED_PEERS`, oldest forgotten first), so a client given only an address
  string connects with the right address type.

Pairing is Bumble's SMP. :class:`PairingPolicy` says what the hub can do and with whom:

- its I/O capability and prompter (:class:`agent.ble.prompts.Prompter`): the daemon has no
  one to ask (Just Works only, :class:`~agent.ble.prompts.RefusingPrompter`); a technician's
  ``homehub pair`` answers passkey entry and numeric comparison at the terminal;
- ``may_pair(address)``: whether a *new* bond may be made with that peer at all (the daemon
  allows it for ``first_contact`` devices only). A peer that is already bonded is never
  paired again, whatever asks (our client or the peer's own Pairing Request): its link is
  encrypted with the stored keys or not at all, so an impersonator at a bonded address can
  neither replace the bond nor get a new one (reliability-catalogue B5).

Bonding keys live in the device's key store: Bumble's JSON key store in the hub's state
directory (:class:`PrivateJsonKeyStore`, :func:`open_bond_store`: mode 0600 in a 0700
directory, written atomically), or an in-memory one when no file is given (tests).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import stat
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from bumble import hci
from bumble.core import BaseBumbleError
from bumble.device import Advertisement, Connection, Device
from bumble.host import Host
from bumble.keys import JsonKeyStore, KeyStore, PairingKeys
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import open_transport
from bumble.transport.common import Transport

from agent.ble.prompts import Prompter
from agent.errors import BleLinkError, KeyMaterialError
from agent.logs import device_label
from agent.private_files import read_private_file_up_to

log = structlog.get_logger(__name__)

HCI_OPEN_TIMEOUT_S: Final = 15.0
"""Opening the transport and powering on: an HCI reset plus about 15 init commands, each
bounded by Bumble's 10 s command timeout; a healthy controller answers in milliseconds."""

HCI_CLOSE_TIMEOUT_S: Final = 5.0
"""Disconnecting what is still connected and flushing the host at shutdown."""

DEFAULT_STATIC_ADDRESS: Final = "C0:48:55:42:00:01"
"""The hub's random static address when none is configured (two MSBs 0b11)."""

DEFAULT_NAME: Final = "homehub"

ORPHAN_GRACE_S: Final = 2.0
"""A central connection no client claimed this long after it completed (a connect cancelled
just as the controller completed it) is disconnected, so it cannot linger unseen."""

MAX_REMEMBERED_PEERS: Final = 256
"""Peers remembered from advertisements: enough for a crowded apartment block, bounded
because advertisements come from strangers too."""

ScanListener = Callable[[Advertisement], None]


BOND_FILE_MODE: Final = 0o600
BOND_DIR_MODE: Final = 0o700
MAX_BOND_FILE_BYTES: Final = 1024 * 1024
"""A bond is about 600 octets of JSON; 1 MiB is over a thousand bonds and bounds a read."""


class PrivateJsonKeyStore(JsonKeyStore):
    """Bumble's JSON key store, kept as a private file: read and written only as mode 0600
    (never through a symbolic link), each save a new file fsynced and renamed over the old
    one, then the directory fsynced, so a power cut leaves the old bonds or the new ones.

    Bumble reads the whole file at each look-up, so a bond another process (``homehub
    pair``) adds is seen at the next connection without a restart.

    Raises (from any operation): :class:`KeyMaterialError` when the file is not private,
    not a regular file, too large or not a JSON object; never with the file's content.
    """

    def __init__(self, path: Path, namespace: str) -> None:
        super().__init__(namespace, str(path))
        self.path = Path(self.filename)

    def _what(self) -> str:
        return f"bond store {self.path}"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<file>.lock`` across a read-modify-write: the daemon
        (a first-contact bond) and ``homehub devices remove`` may both write the file."""
        what = self._what()
        try:
            ensure_private_directory(self.path.parent)
            fd = os.open(
                self.path.with_name(self.path.name + ".lock"),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                BOND_FILE_MODE,
            )
        except OSError as exc:
            raise KeyMaterialError(what, f"cannot be locked: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for one small file's read and write
            yield
        finally:
            os.close(fd)

    async def update(self, name: str, keys: PairingKeys) -> None:
        """Add or update the bond ``name`` (under the file lock)."""
        with self._locked():
            db, key_map = await self.load()
            key_map.setdefault(name, {}).update(keys.to_dict())
            await self.save(db)

    async def delete(self, name: str) -> None:
        """Delete the bond ``name`` (under the file lock); ``KeyError`` when absent."""
        with self._locked():
            db, key_map = await self.load()
            del key_map[name]
            await self.save(db)

    async def delete_all(self) -> None:
        """Delete every bond of this namespace (under the file lock)."""
        with self._locked():
            db, key_map = await self.load()
            key_map.clear()
            await self.save(db)

    async def load(
        self,
    ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
        """The whole file and this namespace's map (empty when the file does not exist)."""
        db = self._read()
        key_map = db.setdefault(self.namespace, {})
        return db, key_map

    def _read(self) -> dict[str, dict[str, dict[str, Any]]]:
        what = self._what()
        raw = read_private_file_up_to(self.path, what, MAX_BOND_FILE_BYTES)
        if not raw:
            return {}
        try:
            db = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise KeyMaterialError(what, "not valid JSON") from None
        if not isinstance(db, dict) or not all(isinstance(v, dict) for v in db.values()):
            raise KeyMaterialError(what, "not a JSON object of namespaces")
        return db

    async def save(self, db: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Write ``db`` atomically: temporary file (0600), fsync, rename, fsync the directory."""
        what = self._what()
        directory = self.path.parent
        temporary = directory / f".{self.path.name}.{os.getpid()}.tmp"
        data = json.dumps(db, sort_keys=True, indent=4).encode("utf-8")
        try:
            ensure_private_directory(directory)
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                BOND_FILE_MODE,
            )
            try:
                os.fchmod(fd, BOND_FILE_MODE)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise KeyMaterialError(what, f"cannot be written: {exc.strerror}") from None


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` (and its parents) as mode 0700 when missing; an existing one must
    be a real directory (not a symbolic link) that group and others cannot write.

    Raises:
        OSError: it cannot be created, or is not a directory.
        KeyMaterialError: it exists but others may write into it.
    """
    directory.mkdir(mode=BOND_DIR_MODE, parents=True, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise KeyMaterialError(f"bond directory {directory}", "not a directory")
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        raise KeyMaterialError(
            f"bond directory {directory}", f"mode {mode:04o} lets group/other write; need 0700"
        )


async def open_bond_store(path: Path, static_address: str) -> PrivateJsonKeyStore:
    """The hub's persisted bonds at ``path``, namespaced by the hub's own address (a bond
    belongs to the identity the peer bonded with); read once here so a broken file is
    reported at start, not at the first connection.

    Raises:
        KeyMaterialError: the file or its directory is not private, or not a key store.
    """
    store = PrivateJsonKeyStore(path, static_address.upper())
    try:
        ensure_private_directory(path.parent)
    except OSError as exc:
        raise KeyMaterialError(f"bond directory {path.parent}", exc.strerror or "error") from None
    await store.load()
    return store


def bond_names(address: str) -> tuple[str, str]:
    """The key-store names a peer's bond can have: Bumble writes ``str(hci.Address)``, which
    is the bare address for a random one and ``<address>/P`` for a public one."""
    bare = address.upper()
    return bare, f"{bare}/P"


PASSKEY_DIGITS: Final = 6


@dataclass(frozen=True, slots=True)
class PairingPolicy:
    """How the hub pairs (Core Spec Vol 3 Part H §2.3.5.1 selects the method from these).

    Attributes:
        io_capability: the hub's I/O capability; ``NO_OUTPUT_NO_INPUT`` means Just Works.
        passkey: a bare passkey-entry hook (kept for tests): awaited when the peer displays
            a passkey the hub must enter; returns the 6-digit number, or ``None`` to refuse.
            ``prompter`` answers instead when it is set.
        secure_connections: request LE Secure Connections.
        mitm: request MITM protection (needs an I/O capability other than none).
        bonding: keep the keys (bond) rather than pair for this connection only.
        prompter: who answers pairing's questions (passkey, numeric comparison); ``None``
            and no ``passkey`` hook: every question is refused, only Just Works completes.
        may_pair: whether a new bond may be made with the peer at this address
            (``AA:BB:CC:DD:EE:FF``); ``None`` allows any peer the hub is asked to pair with.
            A bonded peer is never paired again, whatever this says.
    """

    io_capability: PairingDelegate.IoCapability = PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT
    passkey: Callable[[], Awaitable[int | None]] | None = None
    secure_connections: bool = True
    mitm: bool = False
    bonding: bool = True
    prompter: Prompter | None = None
    may_pair: Callable[[str], bool] | None = None

    @classmethod
    def technician(cls, prompter: Prompter) -> PairingPolicy:
        """``homehub pair``: a keyboard and a display at the hub's side, MITM requested, so
        the device's own I/O capability picks Just Works, passkey entry or (LE Secure
        Connections) numeric comparison; ``prompter`` asks the technician."""
        return cls(
            io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_AND_KEYBOARD_INPUT,
            secure_connections=True,
            mitm=True,
            prompter=prompter,
        )

    def allows(self, address: str) -> bool:
        """Whether a new bond may be made with ``address``."""
        return self.may_pair is None or self.may_pair(address.upper())


class _HubPairingDelegate(PairingDelegate):
    """Bumble's pairing questions for one connection, answered by a :class:`PairingPolicy`.

    Remembers which association model the pairing used (:attr:`method`), from the question
    Bumble asked: none is Just Works.
    """

    def __init__(
        self, policy: PairingPolicy, peer: str, accept: Callable[[], Awaitable[bool]]
    ) -> None:
        super().__init__(io_capability=policy.io_capability)
        self._policy = policy
        self._peer = peer
        self._accept = accept
        self.method = "just_works"
        #: The question the hub's side said no to (``"passkey"``, ``"confirmation"``), if
        #: any: the pairing then fails by our refusal, whatever SMP reason is sent.
        self.declined: str | None = None

    async def accept(self) -> bool:
        """A Pairing Request from the peer: only when a new bond with it is allowed."""
        return await self._accept()

    async def get_number(self) -> int | None:
        """The passkey the device displays, typed by the technician; ``None`` refuses."""
        self.method = "passkey_entry"
        if self._policy.prompter is not None:
            number = await self._policy.prompter.ask_passkey(self._peer)
        elif self._policy.passkey is not None:
            number = await self._policy.passkey()
        else:
            self.declined = "passkey"
            return None
        if number is None or not 0 <= number <= 999_999:
            self.declined = "passkey"
            return None
        return number

    async def display_number(self, number: int, digits: int) -> None:
        """The hub shows a passkey for the technician to type on the device."""
        self.method = "passkey_display"
        if self._policy.prompter is not None:
            await self._policy.prompter.show_passkey(self._peer, number)

    async def compare_numbers(self, number: int, digits: int) -> bool:
        """Numeric comparison (LE Secure Connections): the technician confirms both match."""
        self.method = "numeric_comparison"
        confirmed = self._policy.prompter is not None and (
            await self._policy.prompter.confirm_number(self._peer, number)
        )
        if not confirmed:
            self.declined = "confirmation"
        return confirmed


class BumbleHost:
    """One opened Bumble host (transport + powered-on ``Device``). Build with :meth:`open`."""

    def __init__(
        self,
        transport_spec: str,
        static_address: hci.Address,
        name: str,
        keystore: KeyStore | None,
        pairing: PairingPolicy,
    ) -> None:
        self.transport_spec = transport_spec
        self.static_address = static_address
        self.name = name
        self.pairing = pairing
        self._keystore = keystore
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._lost = False
        self._closed = False
        self._ready_lock = asyncio.Lock()
        #: Serialises LE connection creation: a controller takes one at a time (Vol 4 Part E
        #: §7.8.12 "Command Disallowed" while one is pending).
        self.connect_lock = asyncio.Lock()
        self._scan_listeners: list[ScanListener] = []
        self._scan_lock = asyncio.Lock()
        self._peers: OrderedDict[str, tuple[hci.Address, str | None]] = OrderedDict()
        self._claimed: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._background: set[asyncio.Task[None]] = set()
        self._delegates: weakref.WeakKeyDictionary[Connection, _HubPairingDelegate] = (
            weakref.WeakKeyDictionary()
        )

    # -- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        transport_spec: str,
        *,
        static_address: str = DEFAULT_STATIC_ADDRESS,
        name: str = DEFAULT_NAME,
        keystore: KeyStore | None = None,
        pairing: PairingPolicy | None = None,
    ) -> BumbleHost:
        """Open the transport and power the controller on.

        Raises:
            ValueError: ``static_address`` is not a random static address.
            BleLinkError: the transport cannot be opened or the controller does not
                initialise within :data:`HCI_OPEN_TIMEOUT_S`.
        """
        address = hci.Address(static_address, hci.Address.RANDOM_DEVICE_ADDRESS)
        if not address.is_static:
            raise ValueError("the hub address must be a random static address (MSBs 0b11)")
        host = cls(transport_spec, address, name, keystore, pairing or PairingPolicy())
        await host._power_on()
        return host

    async def _power_on(self) -> None:
        kind = self.transport_spec.split(":", 1)[0]
        try:
            async with asyncio.timeout(HCI_OPEN_TIMEOUT_S):
                transport = await open_transport(self.transport_spec)
                try:
                    device = Device(
                        name=self.name,
                        address=self.static_address,
                        host=Host(transport.source, transport.sink),
                    )
                    if self._keystore is not None:
                        device.keystore = self._keystore
                    device.pairing_config_factory = self._pairing_config
                    await device.power_on()
                except BaseException:
                    await transport.close()
                    raise
        except TimeoutError:
            log.warning("ble_hci_open_timeout", transport=kind, limit_s=HCI_OPEN_TIMEOUT_S)
            raise BleLinkError(f"HCI transport '{kind}' did not initialise") from None
        except (OSError, BaseBumbleError) as exc:
            log.warning("ble_hci_open_failed", transport=kind, error=type(exc).__name__)
            raise BleLinkError(f"HCI transport '{kind}' cannot be opened") from None

        self._transport, self._device, self._lost = transport, device, False
        device.on(Device.EVENT_CONNECTION, self._on_connection)
        terminated = getattr(transport.source, "terminated", None)
        if isinstance(terminated, asyncio.Future):
            terminated.add_done_callback(lambda _f: self._on_transport_lost(transport))
        log.info("ble_host_ready", transport=kind, hub=device_label(str(self.static_address)))

    def _on_transport_lost(self, transport: Transport) -> None:
        if transport is self._transport and not self._closed:
            self._lost = True
            log.warning("ble_hci_transport_lost", transport=self.transport_spec.split(":", 1)[0])

    async def ensure_ready(self) -> Device:
        """The powered-on device, reopening the transport first if it was lost.

        Raises:
            BleLinkError: closed, or the transport cannot be reopened.
        """
        async with self._ready_lock:
            if self._closed:
                raise BleLinkError("the Bluetooth host is closed")
            if self._lost or self._device is None:
                await self._release()
                await self._power_on()
            assert self._device is not None
            return self._device

    async def power_cycle(self) -> None:
        """Power the controller off and on again (HCI reset, the transport reopened): the
        adapter watchdog's last step. Connections and scans end; the caller restarts its scan.

        Raises:
            BleLinkError: closed, or the transport cannot be reopened.
        """
        async with self._ready_lock:
            if self._closed:
                raise BleLinkError("the Bluetooth host is closed")
            await self._release()
            await self._power_on()
        log.info("ble_adapter_power_cycled")

    @property
    def device(self) -> Device | None:
        """The powered-on device, or ``None`` when closed or the transport is lost."""
        return None if (self._closed or self._lost) else self._device

    async def close(self) -> None:
        """Disconnect every connection, stop scanning, close the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()
        log.info("ble_host_closed")

    async def _release(self) -> None:
        device, transport = self._device, self._transport
        self._device, self._transport = None, None
        self._scan_listeners.clear()
        for task in list(self._background):
            task.cancel()
        if device is not None and not self._lost:
            try:
                async with asyncio.timeout(HCI_CLOSE_TIMEOUT_S):
                    for connection in list(device.connections.values()):
                        await connection.disconnect()
                    if device.is_scanning:
                        await device.stop_scanning()
                    await device.power_off()
            except (TimeoutError, BaseBumbleError) as exc:
                log.warning("ble_host_close_incomplete", error=type(exc).__name__)
        if transport is not None:
            await transport.close()

    # -- pairing and bonds ------------------------------------------------------------

    def _pairing_config(self, connection: Connection) -> PairingConfig:
        policy = self.pairing
        address = connection.peer_address.to_string(with_type_qualifier=False)
        known = self.known_peer(address)
        shown = device_label(address)
        if known is not None and known[1]:
            shown = f"{known[1]} ({shown})"

        async def accept() -> bool:
            return await self.may_bond(address, initiated_by="peer")

        delegate = _HubPairingDelegate(policy, shown, accept)
        self._delegates[connection] = delegate
        return PairingConfig(
            sc=policy.secure_connections,
            mitm=policy.mitm,
            bonding=policy.bonding,
            delegate=delegate,
        )

    def pairing_declined(self, connection: Connection) -> str | None:
        """The question the hub's side refused in the last pairing on ``connection``."""
        delegate = self._delegates.get(connection)
        return delegate.declined if delegate is not None else None

    def pairing_method(self, connection: Connection) -> str | None:
        """The association model of the last pairing on ``connection`` (``"just_works"``,
        ``"passkey_entry"``, ``"passkey_display"``, ``"numeric_comparison"``), if any."""
        delegate = self._delegates.get(connection)
        return delegate.method if delegate is not None else None

    async def is_bonded(self, address: str) -> bool:
        """Whether the key store holds a bond for ``AA:BB:CC:DD:EE:FF``."""
        device = await self.ensure_ready()
        keystore = device.keystore
        if keystore is None:
            return False
        for name in bond_names(address):
            if await keystore.get(name) is not None:
                return True
        return False

    async def may_bond(self, address: str, *, initiated_by: str) -> bool:
        """Whether a *new* bond with ``address`` may be made now: the policy allows it and
        no bond exists (a bonded peer is never paired again: the stored keys stay)."""
        label = device_label(address)
        if await self.is_bonded(address):
            log.warning("ble_pairing_refused", device=label, reason="bonded", by=initiated_by)
            return False
        if not self.pairing.allows(address):
            log.warning("ble_pairing_refused", device=label, reason="policy", by=initiated_by)
            return False
        return True

    async def remove_bond(self, address: str) -> bool:
        """Delete the bond with ``AA:BB:CC:DD:EE:FF``; whether there was one."""
        device = await self.ensure_ready()
        keystore = device.keystore
        removed = False
        if keystore is not None:
            for name in bond_names(address):
                if await keystore.get(name) is not None:
                    await keystore.delete(name)
                    removed = True
            if removed:
                await device.refresh_resolving_list()
        if removed:
            log.info("ble_bond_removed", device=device_label(address))
        return removed

    # -- connections ------------------------------------------------------------------

    def claim(self, connection: Connection) -> None:
        """A client owns ``connection`` (so the orphan guard leaves it alone)."""
        self._claimed.add(connection)

    def _on_connection(self, connection: Connection) -> None:
        if connection.role == hci.Role.CENTRAL:
            asyncio.get_running_loop().call_later(ORPHAN_GRACE_S, self._drop_if_orphan, connection)

    def _drop_if_orphan(self, connection: Connection) -> None:
        device = self.device
        if connection in self._claimed or device is None:
            return
        if device.connections.get(connection.handle) is not connection:
            return
        log.warning(
            "ble_orphan_connection_dropped",
            device=device_label(connection.peer_address.to_string(with_type_qualifier=False)),
        )
        task = asyncio.create_task(self._disconnect_quietly(connection), name="ble.drop_orphan")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _disconnect_quietly(connection: Connection) -> None:
        try:
            async with asyncio.timeout(HCI_CLOSE_TIMEOUT_S):
                await connection.disconnect()
        except (TimeoutError, BaseBumbleError) as exc:
            log.warning("ble_orphan_disconnect_failed", error=type(exc).__name__)

    # -- scanning ---------------------------------------------------------------------

    async def add_scan_listener(self, listener: ScanListener, *, active: bool = True) -> None:
        """Deliver every advertisement to ``listener``; the first listener starts the scan."""
        async with self._scan_lock:
            device = await self.ensure_ready()
            self._scan_listeners.append(listener)
            if len(self._scan_listeners) == 1:
                device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
                try:
                    await device.start_scanning(active=active, filter_duplicates=False)
                except BaseException:
                    self._scan_listeners.remove(listener)
                    device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
                    raise

    async def remove_scan_listener(self, listener: ScanListener) -> None:
        """Stop delivering to ``listener``; the last listener to leave stops the scan."""
        async with self._scan_lock:
            if listener not in self._scan_listeners:
                return
            self._scan_listeners.remove(listener)
            device = self.device
            if self._scan_listeners or device is None:
                return
            device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            if device.is_scanning:
                await device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._scan_listeners):
            listener(advertisement)

    # -- peers ------------------------------------------------------------------------

    def remember(self, address: hci.Address, name: str | None) -> None:
        """Note a peer's address type (and name) from its advertisement; bounded LRU."""
        key = address.to_string(with_type_qualifier=False)
        known = self._peers.pop(key, None)
        if name is None and known is not None:
            name = known[1]
        self._peers[key] = (address, name)
        while len(self._peers) > MAX_REMEMBERED_PEERS:
            self._peers.popitem(last=False)

    def known_peer(self, address: str) -> tuple[hci.Address, str | None] | None:
        """The remembered address (with its type) and name for ``AA:BB:CC:DD:EE:FF``."""
        return self._peers.get(address.upper())


# ---------------------------------------------------------------------------------------
# Registry: the bleak backend classes find the host of their transport here.
# ---------------------------------------------------------------------------------------

_hosts: dict[str, tuple[BumbleHost, int]] = {}


def registered_host(transport_spec: str) -> BumbleHost | None:
    """The open host for ``transport_spec``, if :func:`bumble_host` opened one."""
    entry = _hosts.get(transport_spec)
    return entry[0] if entry else None


@asynccontextmanager
async def bumble_host(
    transport_spec: str,
    *,
    static_address: str = DEFAULT_STATIC_ADDRESS,
    name: str = DEFAULT_NAME,
    keystore: KeyStore | None = None,
    pairing: PairingPolicy | None = None,
) -> AsyncIterator[BumbleHost]:
    """Open (or share, when already open) the host of ``transport_spec``; close it on exit.

    A nested use for the same transport shares the first one's host and ignores its own
    options; the host closes when the outermost use exits.

    Raises:
        BleLinkError: the transport cannot be opened.
    """
    entry = _hosts.get(transport_spec)
    if entry is None:
        host = await BumbleHost.open(
            transport_spec,
            static_address=static_address,
            name=name,
            keystore=keystore,
            pairing=pairing,
        )
        _hosts[transport_spec] = (host, 1)
    else:
        host = entry[0]
        _hosts[transport_spec] = (host, entry[1] + 1)
    try:
        yield host
    finally:
        current_host, users = _hosts[transport_spec]
        if users > 1:
            _hosts[transport_spec] = (current_host, users - 1)
        else:
            del _hosts[transport_spec]
            await current_host.close()
