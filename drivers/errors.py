"""The one exception tree of homehub.

Every error the hub raises on purpose derives from :class:`HubError`. The first
level says *whose fault it is*, because that is what decides what happens next:

- :class:`DeviceError`: a BLE device sent something wrong or misbehaved. Never
  retried blindly; the bytes are rejected with a reason, nothing is stored.
- :class:`LocalError`: we (or our operator) got something wrong: configuration,
  command-line arguments, a procedure misused. Not retried.
- :class:`TransportError`: a link failed (BLE radio, MQTT broker, modem).
  Retried with backoff; ``transient`` says whether waiting can help.
- :class:`StorageError`: the disk or the database failed. The reading is not
  reported stored.
- :class:`CryptoError`: a key is missing or wrong, a seal or signature does not
  verify.

Errors carry their facts as attributes (``characteristic``, ``key``, ``path``…),
never only inside the message, so callers decide by type and field, never by
matching text. Messages never contain reading values, patient identifiers, full
device addresses or key material: they are logged.

Leaves also inherit the matching builtin (``ValueError``, ``OSError``-like
semantics are *not* inherited) where a caller outside the hub would expect it,
in the style of bumble's ``InvalidPacketError(BaseBumbleError, ValueError)``.
"""

from __future__ import annotations


class HubError(Exception):
    """Root of every error homehub raises on purpose."""

    #: Whether retrying the same operation later can succeed.
    transient: bool = False


# ---------------------------------------------------------------------------
# The device's fault
# ---------------------------------------------------------------------------


class DeviceError(HubError):
    """A device sent bytes or behaved in a way its specification forbids."""


class DecodeError(DeviceError, ValueError):
    """A characteristic value does not decode.

    Attributes:
        characteristic: what was being decoded, e.g. ``"0x2A35"`` or ``"SFLOAT"``.
        reason: what is wrong, in words a technician understands.
        offset: byte offset where the problem was found, when known.
    """

    def __init__(self, characteristic: str, reason: str, offset: int | None = None) -> None:
        self.characteristic = characteristic
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{characteristic}: {reason}{where}")


class DeviceProtocolError(DeviceError):
    """A device broke a GATT procedure (missing characteristic, wrong property, bad RACP reply).

    Attributes:
        device: the device's short label (never its full address).
        procedure: the procedure that failed, e.g. ``"subscribe_bpm"``.
        reason: what the device did wrong.
    """

    def __init__(self, device: str, procedure: str, reason: str) -> None:
        self.device = device
        self.procedure = procedure
        self.reason = reason
        super().__init__(f"device {device}: {procedure}: {reason}")


# ---------------------------------------------------------------------------
# Our (or our operator's) fault
# ---------------------------------------------------------------------------


class LocalError(HubError):
    """We got something wrong: configuration, arguments, or our own use of a procedure."""


class ConfigError(LocalError):
    """The configuration file is missing, unreadable, or holds a missing or wrong key.

    Attributes:
        path: the configuration file.
        key: the dotted key at fault (``"mqtt.port"``), or ``None`` for the whole file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"key '{key}'" if key else "file"
        super().__init__(f"{path}: {where}: {reason}")


class UsageError(LocalError, ValueError):
    """A command-line argument or command is wrong.

    Attributes:
        argument: the argument at fault.
        reason: what is wrong with it.
    """

    def __init__(self, argument: str, reason: str) -> None:
        self.argument = argument
        self.reason = reason
        super().__init__(f"{argument}: {reason}")


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
    """A link failed: the BLE radio, the MQTT broker, the modem.

    Attributes:
        link: which link (``"ble"``, ``"mqtt"``, ``"modem"``).
        reason: what happened.
    """

    transient = True

    def __init__(self, link: str, reason: str) -> None:
        self.link = link
        self.reason = reason
        super().__init__(f"{link}: {reason}")


class BleLinkError(TransportError):
    """A BLE scan, connection or GATT operation failed or timed out."""

    def __init__(self, reason: str, device: str | None = None) -> None:
        self.device = device
        super().__init__("ble", f"{device}: {reason}" if device else reason)


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
    """The MQTT uplink failed: connect refused, TLS failure, lost connection.

    Attributes:
        rc: the MQTT reason code, when the broker gave one.
    """

    def __init__(self, reason: str, rc: int | None = None, transient: bool = True) -> None:
        self.rc = rc
        self.transient = transient
        super().__init__("mqtt", reason)


# ---------------------------------------------------------------------------
# The disk's fault
# ---------------------------------------------------------------------------


class StorageError(HubError):
    """The outbox database or the disk under it failed.

    Attributes:
        path: the database file.
        operation: what we were doing (``"store"``, ``"mark_delivered"``…).
        reason: what failed.
    """

    transient = True

    def __init__(self, path: str, operation: str, reason: str) -> None:
        self.path = path
        self.operation = operation
        self.reason = reason
        super().__init__(f"{path}: {operation}: {reason}")


class StorageFullError(StorageError):
    """The disk is full (ENOSPC) or the outbox quota is reached."""


class StorageCorruptError(StorageError):
    """The database failed its integrity check."""

    transient = False


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
