"""The hub-wide branches of homehub's one exception tree; every error the agent raises.

The root and the protocol branches (:class:`HubError`, :class:`DeviceError`,
:class:`LocalError`) live in :mod:`drivers.errors`, the sans-I/O package, and are re-exported
here, so the agent imports every error from this module. The first level says *whose fault it
is*:

- :class:`DeviceError`: a device sent something wrong (``drivers.errors``).
- :class:`LocalError`: we or our operator got something wrong: :class:`ConfigError`,
  :class:`UsageError`, :class:`RecordTooLargeError`.
- :class:`TransportError`: a link failed (BLE radio, MQTT broker, modem).
- :class:`StorageError`: the disk or the database failed.
- :class:`CryptoError`: a key is missing or wrong, a seal or signature does not verify.

Retryable or not is said by the class (:attr:`HubError.retryable`): a refusal that waiting
cannot fix has its own class (:class:`UplinkRefusedError`, :class:`StorageUnusableError`,
:class:`StorageCorruptError`). :mod:`agent.retry` decides by type, never by message.
"""

from __future__ import annotations

from enum import StrEnum

from drivers.errors import (
    DecodeError,
    DeviceError,
    DeviceFloodError,
    DeviceProtocolError,
    HubError,
    LocalError,
    UsageError,
)

__all__ = [
    "BleDeviceAbsentError",
    "BleLinkError",
    "BleLinkLostError",
    "BleStackUnavailableError",
    "BondExistsError",
    "BondNotDeletedError",
    "CertificateRefusedError",
    "CommandRejectedError",
    "CommandRejection",
    "ConfigError",
    "CryptoError",
    "DecodeError",
    "DeviceError",
    "DeviceFloodError",
    "DeviceIdentityError",
    "DeviceProtocolError",
    "DeviceSecurityError",
    "HubError",
    "IntegrityError",
    "KeyMaterialError",
    "LinkSecurityError",
    "LocalError",
    "PairingError",
    "PairingFailure",
    "PlatformError",
    "PublishNotQueuedError",
    "PublishRefusedError",
    "PublishRejectedError",
    "ReceiptRejectedError",
    "ReceiptRejection",
    "RecordTooLargeError",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "StorageUnusableError",
    "TransportError",
    "UnknownDevicesError",
    "UplinkError",
    "UplinkRefusedError",
    "UsageError",
]


# ---------------------------------------------------------------------------
# The device's (or an impostor's) fault: security
# ---------------------------------------------------------------------------


class DeviceSecurityError(DeviceError):
    """The device at an allow-listed address failed a security check: no reading of this
    session is accepted and the daemon raises a ``security`` event (reliability-catalogue B5).

    Never retried at once: the per-device breaker keeps it away (an impostor must not get a
    connection a second). Carries the device label only (never the address or a serial).

    Attributes:
        device: the device's label (last two address octets).
        check: which check failed (``"identity"``, ``"encryption"``, ``"bond"``).
        reason: what was wrong, without values.
    """

    def __init__(self, device: str, check: str, reason: str) -> None:
        self.device = device
        self.check = check
        self.reason = reason
        super().__init__(f"{device}: {check} check failed: {reason}")


class DeviceIdentityError(DeviceSecurityError):
    """The device's Device Information (model, serial, System ID) is not the identity pinned
    for its address (:mod:`agent.ble.identity`).

    Attributes:
        source: where the pin came from (``"config"`` or ``"first_contact"``).
    """

    def __init__(self, device: str, source: str, reason: str) -> None:
        self.source = source
        super().__init__(device, "identity", reason)


class LinkSecurityError(DeviceSecurityError):
    """The link could not be encrypted with the device's bond (the peer lacks the keys or
    refused), or a device configured to need encryption was reached unencrypted."""


# ---------------------------------------------------------------------------
# Our (or our operator's) fault
# ---------------------------------------------------------------------------


class ConfigError(LocalError):
    """The configuration file is missing, unreadable, or holds a missing or wrong key.

    Attributes:
        path: the configuration file.
        key: the dotted key at fault (``"mqtt.port"``), or ``None`` for the whole file.
        reason: what is wrong with it.
        line: the line of the file where the key (or its table) stands, when known.
    """

    def __init__(self, path: str, key: str | None, reason: str, line: int | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        self.line = line
        at = f":{line}" if line is not None else ""
        where = f"key '{key}'" if key else "file"
        super().__init__(f"{path}{at}: {where}: {reason}")


class RecordTooLargeError(LocalError, ValueError):
    """A record handed to the outbox exceeds its size bound; nothing was stored.

    Our fault: the pipeline built a record larger than any reading can need, so retrying
    cannot help.

    Attributes:
        kind: the record's kind (``"observation"``).
        size_bytes: the record's size.
        limit_bytes: the bound it exceeds.
    """

    def __init__(self, kind: str, size_bytes: int, limit_bytes: int) -> None:
        self.kind = kind
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(f"{kind} record of {size_bytes} bytes exceeds {limit_bytes} bytes")


# ---------------------------------------------------------------------------
# A link's fault
# ---------------------------------------------------------------------------


class TransportError(HubError):
    """A link failed: the BLE radio, the MQTT broker, the modem. Retried with backoff.

    Attributes:
        link: which link (``"ble"``, ``"mqtt"``, ``"modem"``).
        reason: what happened.
    """

    retryable = True

    def __init__(self, link: str, reason: str) -> None:
        self.link = link
        self.reason = reason
        super().__init__(f"{link}: {reason}")


class BleLinkError(TransportError):
    """A BLE scan, connection or GATT operation failed or timed out."""

    def __init__(self, reason: str, device: str | None = None) -> None:
        self.device = device
        super().__init__("ble", f"{device}: {reason}" if device else reason)


class BleStackUnavailableError(BleLinkError):
    """The Bluetooth stack itself cannot be reached: no system D-Bus or no BlueZ behind it,
    no adapter, an HCI transport that does not answer. A fault of the host, waited out with
    backoff at the stack level (no device is to blame)."""


class BleDeviceAbsentError(BleLinkError):
    """The device did not advertise within the scan window: switched off, asleep, out of
    range. The normal state of a health device between measurements, not a link failure."""


class BleLinkLostError(BleLinkError):
    """The BLE link dropped during a device session, after the connection was set up.

    Measurements received before the drop were already handed on; the device keeps every
    one whose indication it did not see confirmed and sends it again next time.

    Attributes:
        phase: ``"setup"`` (reading device information, subscribing) or ``"collect"``.
        measurements: how many measurements arrived, and were handed on, before the drop.
    """

    def __init__(self, phase: str, measurements: int, device: str | None = None) -> None:
        self.phase = phase
        self.measurements = measurements
        super().__init__(f"link lost during {phase} after {measurements} measurements", device)


class UplinkError(TransportError):
    """The MQTT uplink failed in a way waiting can fix: unreachable, dropped, timed out.

    Attributes:
        rc: the MQTT reason code, when the broker gave one.
    """

    def __init__(self, reason: str, rc: int | None = None) -> None:
        self.rc = rc
        super().__init__("mqtt", reason)


class PublishNotQueuedError(UplinkError):
    """The MQTT client refused to queue a publish on a live connection (its queue full):
    nothing was sent, the connection goes on, and the message may be handed again at once
    (the publisher re-reads it; it is not evidence against the connection or the record)."""


class UplinkRefusedError(UplinkError):
    """The broker or TLS refused us for a reason waiting alone cannot fix (certificate not
    accepted, 'not authorized', a message refused for good): retried only slowly."""

    retryable = False


class PublishRefusedError(UplinkError):
    """The broker refused one message (a PUBACK reason code ≥ 0x80: quota exceeded, busy,
    unspecified) while the connection stays up; a later try may succeed. ``rc`` is set."""


class PublishRejectedError(PublishRefusedError, UplinkRefusedError):
    """The broker refused one message for good (not authorized, topic name invalid, payload
    format invalid): sending the same bytes again cannot succeed."""

    retryable = False


# ---------------------------------------------------------------------------
# The disk's fault
# ---------------------------------------------------------------------------


class StorageError(HubError):
    """The outbox database or the disk under it failed; waiting may help (a full or failing
    disk). The reading is not reported stored.

    Attributes:
        path: the database file.
        operation: what we were doing (``"append"``, ``"mark_delivered"``…).
        reason: what failed.
    """

    retryable = True

    def __init__(self, path: str, operation: str, reason: str) -> None:
        self.path = path
        self.operation = operation
        self.reason = reason
        super().__init__(f"{path}: {operation}: {reason}")


class StorageFullError(StorageError):
    """The disk is full (ENOSPC) or the outbox quota is reached."""


class StorageUnusableError(StorageError):
    """The outbox cannot be used and waiting will not change that: closed, another hub's,
    a newer schema, durability refused, sequence numbers exhausted."""

    retryable = False


class StorageCorruptError(StorageError):
    """The database failed its integrity check."""

    retryable = False


# ---------------------------------------------------------------------------
# A key's or a signature's fault
# ---------------------------------------------------------------------------


class CryptoError(HubError):
    """A key is missing or unusable, or a seal or signature does not verify.

    Attributes:
        what: the key, record or envelope concerned (``"data key"``, ``"seq 17"``).
        reason: what is wrong (never key material).
    """

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class KeyMaterialError(CryptoError):
    """A key file is missing, has the wrong mode or the wrong format."""


class IntegrityError(CryptoError, ValueError):
    """A sealed record or a signed envelope failed authentication."""


class UnknownDevicesError(IntegrityError):
    """A version-3 reading names its Devices by a device-set digest its reader does not hold
    (docs/platform-protocol.md "Devices by reference"): not a fault of the reading, which
    expands once the set is known; a platform refuses it ``unknown_device`` and the hub
    sends it again with its Devices in full.

    Attributes:
        digest: the device-set digest (16 bytes) that could not be resolved.
    """

    def __init__(self, what: str, reason: str, digest: bytes) -> None:
        self.digest = digest
        super().__init__(what, reason)


# ---------------------------------------------------------------------------
# Pairing (agent/ble/bluez_devices.py, agent/ble/bluez_agent.py)
# ---------------------------------------------------------------------------


class PairingFailure(StrEnum):
    """Why a pairing did not bond (:attr:`PairingError.failure`)."""

    DECLINED = "declined"
    """The hub's side said no: the technician refused (no passkey typed, numbers not
    confirmed), or BlueZ asked a question the hub never answers (a legacy PIN)."""
    UNANSWERED = "unanswered"
    """A question got no answer within the prompt timeout (30 s at most)."""
    CANCELED = "canceled"
    """BlueZ or the device canceled (``AuthenticationCanceled``, the agent's ``Cancel``)."""
    REJECTED = "rejected"
    """The device or BlueZ rejected the pairing (``AuthenticationRejected``)."""
    FAILED = "failed"
    """Authentication failed: the keys did not match (a mistyped passkey), or BlueZ failed
    (``AuthenticationFailed``, ``Failed``)."""
    TIMEOUT = "timeout"
    """No result within the pairing deadline (``AuthenticationTimeout``, or ours)."""


class PairingError(LinkSecurityError):
    """Pairing with the device did not bond; nothing is left bonded or trusted by it.

    Not retried by itself: every failure needs a person (the device back in pairing mode, the
    passkey typed again). A link that could not be set up at all is a :class:`BleLinkError`
    instead, and waiting can fix that.

    Attributes:
        failure: why (:class:`PairingFailure`).
        question: the agent's question the hub refused or left unanswered (``"passkey"``,
            ``"confirmation"``, ``"pin_code"``…), or ``None``.
        bluez_error: the ``org.bluez.Error`` name BlueZ answered ``Pair()`` with (its last
            part, ``"AuthenticationFailed"``), or ``None`` when the hub's deadline passed.
    """

    def __init__(
        self,
        device: str,
        failure: PairingFailure,
        *,
        question: str | None = None,
        bluez_error: str | None = None,
    ) -> None:
        self.failure = failure
        self.question = question
        self.bluez_error = bluez_error
        reason = failure.value
        if question is not None:
            reason += f" ({question})"
        if bluez_error is not None:
            reason += f", BlueZ {bluez_error}"
        super().__init__(device, "pairing", reason)


class BondExistsError(LocalError):
    """The device is already paired with this adapter (BlueZ ``AlreadyExists``); the bond was
    left as it was. Remove it first to pair again.

    Attributes:
        device: the device's label (last two address octets).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        super().__init__(f"{device}: already paired")


class BondNotDeletedError(HubError):
    """A device left the allow-list, but its bond could not be deleted (the stack or the key
    store refused); the daemon never connects to it again, the bond is only clutter
    (``homehub devices remove`` exits 1 and says so).

    Attributes:
        device: the removed device's label.
        reason: why the bond was not deleted.
    """

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(
            f"removed '{device}' from the allow-list, but its bond was not deleted: {reason}"
        )


# ---------------------------------------------------------------------------
# The platform's (or an impostor's) fault: commands (agent/commands.py, agent/cert_rotation.py)
# ---------------------------------------------------------------------------


class PlatformError(HubError):
    """The platform, or someone posing as it, sent a message the hub refuses. Not retried:
    the same bytes are refused again; the platform must send another message."""


class CommandRejection(StrEnum):
    """Why a command was refused (:attr:`CommandRejectedError.reason`); the value is the
    reply's ``error`` code and the audit line's ``reason`` (docs/platform-protocol.md)."""

    FORGED = "forged"
    """Not signed by the platform key: another kid, or a signature that does not verify."""
    WRONG_HUB = "wrong_hub"
    """Signed by the platform for another hub."""
    EXPIRED = "expired"
    """Outside ``iat - 300 <= now <= exp`` by the hub's clock."""
    REPLAYED = "replayed"
    """Its nonce was accepted before and has not expired."""
    MALFORMED = "malformed"
    """Not a COSE_Sign1 command of the contract: bad CBOR, wrong content type, a missing or
    mistyped field, a lifetime over an hour."""
    UNKNOWN_OP = "unknown_op"
    """An ``op`` the hub does not know."""
    BAD_ARGS = "bad_args"
    """The op's arguments are missing, mistyped, or not allowed (a key off the list)."""
    REPLAY_MEMORY_FULL = "replay_memory_full"
    """The hub remembers as many unexpired nonces as it can hold; it refuses new commands
    rather than forget one (only the platform key can fill it)."""

    @property
    def security(self) -> bool:
        """Whether this rejection is a ``security`` event (forged, expired, replayed,
        another hub's)."""
        return self in _SECURITY_REJECTIONS


_SECURITY_REJECTIONS = frozenset(
    {
        CommandRejection.FORGED,
        CommandRejection.WRONG_HUB,
        CommandRejection.EXPIRED,
        CommandRejection.REPLAYED,
    }
)


class CommandRejectedError(PlatformError):
    """A command from the platform was refused before anything was done.

    Attributes:
        reason: why (:class:`CommandRejection`).
        op: the command's op when it is one the hub knows, else ``None``.
        nonce: the command's nonce when its signature verified and the nonce could be read
            (a reply is owed then), else ``None``.
        detail: a fixed text saying which check failed (never a value from the message).
    """

    def __init__(
        self,
        reason: CommandRejection,
        detail: str,
        *,
        op: str | None = None,
        nonce: bytes | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.op = op
        self.nonce = nonce
        super().__init__(f"command rejected ({reason.value}): {detail}")


class CertificateRefusedError(PlatformError):
    """A certificate sent by ``install_certificate`` was not installed.

    Attributes:
        check: which check failed: ``"no_pending_key"`` (no CSR outstanding),
            ``"not_a_certificate"``, ``"public_key"`` (not the pending key's), ``"subject"``
            (CN is not the hub id), ``"issuer"`` (not issued by the configured CA),
            ``"validity"`` (not valid now).
    """

    def __init__(self, check: str) -> None:
        self.check = check
        super().__init__(f"certificate refused: {check}")


# ---------------------------------------------------------------------------
# The platform's (or an impostor's) fault: receipts (agent/receipts.py)
# ---------------------------------------------------------------------------


class ReceiptRejection(StrEnum):
    """Why a receipt was refused (:attr:`ReceiptRejectedError.reason`); the value is the
    ``receipt_rejected`` line's ``reason`` (docs/platform-protocol.md, "Receipts"). Every
    rejection is a ``security`` event: a receipt decides what the hub deletes."""

    FORGED = "forged"
    """Its kid is the platform key's, but the signature does not verify with it."""
    WRONG_KEY = "wrong_key"
    """Signed by another key than the platform's (its kid is not the platform key's)."""
    MALFORMED = "malformed"
    """Not a COSE_Sign1 receipt of the contract: bad CBOR, another content type, a missing,
    extra or mistyped field, a lifetime over an hour, too many items."""
    WRONG_HUB = "wrong_hub"
    """Signed by the platform for another hub."""
    EXPIRED = "expired"
    """Outside ``iat - 300 <= now <= exp`` by the hub's clock."""
    REPLAYED = "replayed"
    """Its rid was accepted before (or is older than what the replay memory reaches)."""
    MISMATCHED = "mismatched"
    """An item names an envelope this hub sent, with other seqs than that envelope's."""
    UNKNOWN_ENVELOPE = "unknown_envelope"
    """An item names an envelope this hub does not know, and its seqs are not all pending."""


class ReceiptRejectedError(PlatformError):
    """A receipt from the platform was refused; nothing was deleted or marked.

    Attributes:
        reason: why (:class:`ReceiptRejection`).
        detail: a fixed text saying which check failed (never a value from the receipt).
    """

    def __init__(self, reason: ReceiptRejection, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"receipt rejected ({reason.value}): {detail}")


# ---------------------------------------------------------------------------
# The modem's link (agent/modem/)
# ---------------------------------------------------------------------------


class ModemTransportError(TransportError):
    """The modem's AT port failed: it cannot be opened (absent, locked by another program such
    as ModemManager), or reading or writing it failed. Retried by reopening the port.

    Attributes:
        port: the port's path.
    """

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        super().__init__("modem", f"{port}: {reason}")


class ModemPortLostError(ModemTransportError):
    """The port went away while open: the module reset or re-enumerated on USB (the ttyUSB
    node vanished). Reopen it once the path is back."""


class ModemTimeoutError(ModemTransportError):
    """A command got no final result code within its timeout; the port is resynchronised
    (a plain ``AT``) before the next command.

    Attributes:
        command: the command's name (``"+CSQ"``, ``"ATI"``), never its text (it can carry a
            PIN or an APN).
        timeout_s: the timeout that passed.
    """

    def __init__(self, port: str, command: str, timeout_s: float) -> None:
        self.command = command
        self.timeout_s = timeout_s
        super().__init__(port, f"{command}: no final result code within {timeout_s:g} s")


__all__ += ["ModemPortLostError", "ModemTimeoutError", "ModemTransportError"]


# ---------------------------------------------------------------------------
# The modem through ModemManager (agent/modem/modemmanager.py)
# ---------------------------------------------------------------------------


class ModemManagerError(TransportError):
    """ModemManager could not be used for an operation over D-Bus. Retried with backoff.

    Never carries ModemManager's error text (it can name the modem's identifiers), only the
    D-Bus error's name.

    Attributes:
        operation: what was asked (``"connect"``, ``"snapshot"``, ``"Modem.Reset"``…).
        dbus_error: the D-Bus error name ModemManager or the bus answered, or ``None``.
    """

    def __init__(self, operation: str, reason: str, dbus_error: str | None = None) -> None:
        self.operation = operation
        self.dbus_error = dbus_error
        super().__init__("modem", f"ModemManager {operation}: {reason}")


class ModemManagerUnavailableError(ModemManagerError):
    """No system D-Bus, or no ModemManager on it (not running, not installed, disabled): the
    hub cannot reach the modem this way until ModemManager is back."""


class ModemManagerTimeoutError(ModemManagerError, TimeoutError):
    """ModemManager (or the bus) did not answer within the operation's timeout.

    Attributes:
        timeout_s: the timeout that passed.
    """

    def __init__(self, operation: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(operation, f"no answer within {timeout_s:g} s")


class ModemManagerCallError(ModemManagerError):
    """ModemManager answered an action (connect, disconnect, reset) with an error, e.g.
    ``org.freedesktop.ModemManager1.Error.Core.WrongState``; ``dbus_error`` is set."""


class ModemAbsentError(LocalError):
    """ModemManager runs but manages no modem the hub can use: none plugged in, or it vanished
    (a reset re-enumerates it). Not retried by itself: a person plugs the module in, or
    configures the AT backend instead.

    Attributes:
        modems: how many modems ModemManager manages, or ``None`` when not counted (an
            object that vanished under a call).
        reason: what is missing.
    """

    def __init__(self, modems: int | None, reason: str) -> None:
        self.modems = modems
        self.reason = reason
        super().__init__(f"ModemManager: {reason}")


class ModemPortHeldError(LocalError):
    """The AT port the hub is configured to use is held by ModemManager: the two would fight
    over it (ModemManager probes and polls it, and re-probes after every reset). The
    operator's choice to make; the message says how.

    Attributes:
        port: the port's device path (``/dev/ttyUSB2``, never a by-id path, which can carry
            the module's serial number).
        holder: who holds it (``"ModemManager"``).
        fix: what to do, in words a technician can follow.
    """

    def __init__(self, port: str, holder: str, fix: str) -> None:
        self.port = port
        self.holder = holder
        self.fix = fix
        super().__init__(f"{holder} holds {port}: {fix}")


__all__ += [
    "ModemAbsentError",
    "ModemManagerCallError",
    "ModemManagerError",
    "ModemManagerTimeoutError",
    "ModemManagerUnavailableError",
    "ModemPortHeldError",
]
