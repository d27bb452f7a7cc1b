"""The root of homehub's one exception tree, and the branches a protocol package raises.

Every error the hub raises on purpose derives from :class:`HubError`. The first level says
*whose fault it is*, because that is what decides what happens next. This module, part of
the sans-I/O protocol package, holds the root and the two branches a protocol can raise:

- :class:`DeviceError`: a device sent something wrong or misbehaved. Never retried
  blindly; the bytes are rejected with a reason, nothing is stored.
- :class:`LocalError`: we (or our operator) got something wrong: a procedure misused,
  a command-line argument. Not retried.

The hub-wide branches (configuration, transport, storage, crypto) live in
:mod:`agent.errors`, which also re-exports these, so code of the agent imports every error
from there.

Retryability is a property of the class (:attr:`HubError.retryable`), never of an instance
and never read from a message: :mod:`agent.retry` decides by type.

Errors carry their facts as attributes (``characteristic``, ``key``, ``path``…), never only
inside the message, so callers decide by type and field, never by matching text. Messages
never contain reading values, patient identifiers, full device addresses or key material:
they are logged.

Leaves also inherit the matching builtin (``ValueError``) where a caller outside the hub
would expect it, in the style of bumble's ``InvalidPacketError(BaseBumbleError, ValueError)``.
"""

from __future__ import annotations

from typing import ClassVar


class HubError(Exception):
    """Root of every error homehub raises on purpose."""

    retryable: ClassVar[bool] = False
    """Whether the same operation, tried again later, can succeed (decided by class)."""


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


class DeviceFloodError(DeviceProtocolError):
    """A device filled a bounded buffer: it sent more than any healthy device can.

    The session ends and the device is reported; what was complete before the bound was hit
    has been handed on.

    Attributes:
        buffer: which bound was hit (``"racp_probe"``, ``"measurements"``…).
        limit: the bound.
    """

    def __init__(self, device: str, procedure: str, buffer: str, limit: int) -> None:
        self.buffer = buffer
        self.limit = limit
        super().__init__(device, procedure, f"{buffer} buffer bound of {limit} reached")


class ModemProtocolError(DeviceError, ValueError):
    """A modem's AT response line does not parse (3GPP TS 27.007, the vendor's AT manual).

    The message names the command, the field and its position, never the line: a line can
    hold identifiers (IMSI, ICCID, IMEI), and errors are logged.

    Attributes:
        command: the response prefix or command parsed, e.g. ``"+CSQ"``, ``"+QENG"``.
        field: the parameter at fault, by its spec name, e.g. ``"rssi"``, ``"stat"``.
        reason: what is wrong, without the value when the field is an identifier.
        position: 0-based index of the parameter after the prefix, when known.
    """

    def __init__(self, command: str, field: str, reason: str, position: int | None = None) -> None:
        self.command = command
        self.field = field
        self.reason = reason
        self.position = position
        where = f" (parameter {position})" if position is not None else ""
        super().__init__(f"{command}: {field}: {reason}{where}")


# ---------------------------------------------------------------------------
# Our (or our operator's) fault
# ---------------------------------------------------------------------------


class LocalError(HubError):
    """We got something wrong: configuration, arguments, or our own use of a procedure."""


class UsageError(LocalError, ValueError):
    """A command-line argument or a call's argument is wrong.

    Attributes:
        argument: the argument at fault.
        reason: what is wrong with it.
    """

    def __init__(self, argument: str, reason: str) -> None:
        self.argument = argument
        self.reason = reason
        super().__init__(f"{argument}: {reason}")


class AtCommandError(LocalError, ValueError):
    """An AT command we were about to send is malformed (V.250 §5.2.1; our fault).

    The message never quotes the command: it can carry a PIN or an APN's credentials.

    Attributes:
        reason: what is wrong, e.g. ``"control character"``, ``"longer than 512 bytes"``.
        position: 0-based character offset of the problem, when there is one.
    """

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position
        where = f" at character {position}" if position is not None else ""
        super().__init__(f"AT command: {reason}{where}")


class AtStateError(LocalError, RuntimeError):
    """An AT codec was used out of turn, e.g. a command sent while another one is pending.

    Attributes:
        operation: what was attempted (``"send"``, ``"abort_pending"``).
        reason: why it is not allowed now.
    """

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"{operation}: {reason}")
