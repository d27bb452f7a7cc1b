"""The hub's BlueZ pairing agent: ``org.bluez.Agent1`` over D-Bus with dbus-fast.

bleak has no pairing agent (reliability-catalogue finding 5): BlueZ asks *an agent* every
question pairing raises (which passkey? do the numbers match? may this device pair?), and
without one a device that asks for a passkey cannot pair, and on BlueZ ≥ 5.72 even Just Works
can fail with ``AuthenticationFailed``. :class:`PairingAgent` is that agent, for one pairing:

- it is exported on the caller's D-Bus connection and registered with
  ``org.bluez.AgentManager1.RegisterAgent(path, capability)`` and ``RequestDefaultAgent``;
  leaving the ``async with`` block unregisters and unexports it. BlueZ asks the agent
  registered by the connection that called ``Device1.Pair()``, so the pairing must be started
  on the same connection (:mod:`agent.ble.bluez_devices` does).
- it answers **only BlueZ** (a call from any connection but the owner of ``org.bluez`` is
  refused) and **only for the one device object path being paired**: a question about another
  device is refused (``org.bluez.Error.Rejected``) without asking anyone. An agent that says
  yes to every device is a hole through which anything in range can pair and be trusted.
- its questions go to a :class:`~agent.ble.prompts.Prompter` (the technician's terminal;
  :class:`~agent.ble.prompts.RefusingPrompter` in the daemon, where only Just Works can
  complete). Each is bounded by ``prompt_timeout_s`` (≤ :data:`PROMPT_TIMEOUT_MAX_S`,
  reliability-catalogue B7), inside BlueZ's own 60 s wait for an agent's reply.

The Agent1 methods (BlueZ ``doc/org.bluez.Agent.rst``) and what this agent answers::

    Release()                          BlueZ dropped the agent: pending question canceled
    RequestPinCode(device)             Rejected: a legacy PIN is BR/EDR, never an LE health device
    DisplayPinCode(device, pincode)    Rejected: likewise
    RequestPasskey(device) -> u        Prompter.ask_passkey; None (or out of range) -> Rejected
    DisplayPasskey(device, u, q)       Prompter.show_passkey, once per passkey
    RequestConfirmation(device, u)     Prompter.confirm_number; False -> Rejected
    RequestAuthorization(device)       Just Works asked by the device: yes for the device paired
    AuthorizeService(device, uuid)     yes for the device being paired, Rejected otherwise
    Cancel()                           the pending question is canceled -> Canceled

A question not answered in time is answered ``org.bluez.Error.Canceled``. What the agent
refused, and why, is kept (:attr:`PairingAgent.refusal`) so that the caller can say *why* a
pairing failed by type (:class:`~agent.errors.PairingError`), not by reading BlueZ's text.

Nothing the agent logs or raises holds a full address, an object path (it spells the address)
or a passkey: devices appear as their label (last two octets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Annotated, Any, Final, Self, TypeVar

import structlog
from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
    DBusUInt32,
)
from dbus_fast.service import ServiceInterface, dbus_method

from agent.ble.prompts import PASSKEY_MAX, Prompter
from agent.errors import BleStackUnavailableError, PairingFailure, UsageError
from agent.logs import device_label

__all__ = [
    "AGENT_INTERFACE",
    "AGENT_MANAGER_INTERFACE",
    "AGENT_PATH",
    "BLUEZ_AGENT_TIMEOUT_S",
    "BLUEZ_ROOT_PATH",
    "BLUEZ_SERVICE",
    "CANCELED",
    "DBUS_CALL_TIMEOUT_S",
    "PROMPT_TIMEOUT_MAX_S",
    "PROMPT_TIMEOUT_S",
    "REJECTED",
    "Capability",
    "PairingAgent",
    "Question",
    "Refusal",
    "bluez_call",
    "label_of_path",
]

log = structlog.get_logger(__name__)

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

BLUEZ_SERVICE: Final = "org.bluez"
BLUEZ_ROOT_PATH: Final = "/org/bluez"
AGENT_INTERFACE: Final = "org.bluez.Agent1"
AGENT_MANAGER_INTERFACE: Final = "org.bluez.AgentManager1"

AGENT_PATH: Final = "/org/homehub/pairing_agent"
"""Where the agent is exported on our connection. One pairing at a time per connection
(:class:`~agent.ble.bluez_devices.BluezAdapter` holds a lock), so one fixed path does."""

REJECTED: Final = "org.bluez.Error.Rejected"
CANCELED: Final = "org.bluez.Error.Canceled"

BLUEZ_AGENT_TIMEOUT_S: Final = 60.0
"""How long bluetoothd waits for an agent's reply (``REQUEST_TIMEOUT`` in BlueZ
``src/agent.c``); past it BlueZ cancels the request and the pairing fails."""

PROMPT_TIMEOUT_MAX_S: Final = 30.0
"""Longest a question waits for the technician (reliability-catalogue B7: ≤ 30 s). Half of
BlueZ's own wait, so our answer, even a refusal, always reaches BlueZ before it gives up."""

PROMPT_TIMEOUT_S: Final = PROMPT_TIMEOUT_MAX_S
"""Default bound of one question."""

DBUS_CALL_TIMEOUT_S: Final = 10.0
"""Bound of one D-Bus call to BlueZ that does no radio work (register an agent, read or set a
property). bluetoothd answers these in milliseconds; a stalled D-Bus must not hang the hub
(Home Assistant nests its connects in a safety timeout for the same reason)."""

_T = TypeVar("_T")

NoReply = Annotated[None, DBusSignature("")]
"""A D-Bus method that returns nothing."""


class Capability(StrEnum):
    """The agent's I/O capability, from which BlueZ and the device pick the association model
    (Core Vol 3 Part H §2.3.5.1)."""

    KEYBOARD_DISPLAY = "KeyboardDisplay"
    """A technician at a terminal: passkey entry either way, numeric comparison."""
    NO_INPUT_NO_OUTPUT = "NoInputNoOutput"
    """Nobody to ask (the daemon): Just Works only."""


class Question(StrEnum):
    """The agent's questions, as :attr:`Refusal.question` and
    :attr:`~agent.errors.PairingError.question` name them."""

    PIN_CODE = "pin_code"
    PASSKEY = "passkey"
    DISPLAY_PASSKEY = "display_passkey"
    CONFIRMATION = "confirmation"
    AUTHORIZATION = "authorization"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Refusal:
    """What the agent refused for the device being paired, and why.

    Attributes:
        question: the question refused.
        failure: :attr:`~agent.errors.PairingFailure.DECLINED` (the answer was no),
            ``UNANSWERED`` (no answer in time) or ``CANCELED`` (BlueZ canceled it).
    """

    question: Question
    failure: PairingFailure


def label_of_path(path: str) -> str:
    """The label (last two octets) of a BlueZ device object path, ``…/dev_AA_BB_CC_DD_EE_FF``:
    what the logs may show of a device that is not the one being paired."""
    leaf = path.rsplit("/", 1)[-1]
    if not leaf.startswith("dev_"):
        return "..?"
    return device_label(leaf[4:].replace("_", ":"))


async def bluez_call(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    destination: str = BLUEZ_SERVICE,
    timeout_s: float | None = DBUS_CALL_TIMEOUT_S,
) -> list[Any]:
    """Call ``interface.member`` on ``path`` and return the reply's body.

    Raises:
        dbus_fast.DBusError: the callee answered with an error (its ``type`` is the D-Bus
            error name, e.g. ``org.bluez.Error.Failed``; its text is BlueZ's and may name an
            object path, so never log it).
        TimeoutError: no reply within ``timeout_s`` (``None``: the caller bounds the wait).
    """
    message = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    if timeout_s is None:
        reply = await bus.call(message)
    else:
        async with asyncio.timeout(timeout_s):
            reply = await bus.call(message)
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text, reply)
    return list(reply.body)


def _stack_error(operation: str, exc: BaseException) -> BleStackUnavailableError:
    """BlueZ cannot be used for ``operation``: the D-Bus error's name, never its text."""
    what = exc.type if isinstance(exc, DBusError) else type(exc).__name__
    return BleStackUnavailableError(f"BlueZ {operation} failed: {what}")


# ---------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------


class PairingAgent(ServiceInterface):
    """``org.bluez.Agent1`` for the pairing of one device (see the module docstring).

    Use as ``async with PairingAgent(bus, prompter, device_path=…) as agent:`` and start the
    pairing inside the block on the same ``bus``.

    Args:
        bus: the connection to BlueZ's bus the pairing is started on.
        prompter: who answers the questions.
        device_path: the BlueZ object path of the device being paired; the agent answers for
            no other.
        capability: the I/O capability declared to BlueZ.
        prompt_timeout_s: bound of each question, ``0 < t ≤`` :data:`PROMPT_TIMEOUT_MAX_S`.
        path: where the agent is exported.
    """

    def __init__(
        self,
        bus: MessageBus,
        prompter: Prompter,
        *,
        device_path: str,
        capability: Capability = Capability.KEYBOARD_DISPLAY,
        prompt_timeout_s: float = PROMPT_TIMEOUT_S,
        path: str = AGENT_PATH,
    ) -> None:
        if not 0 < prompt_timeout_s <= PROMPT_TIMEOUT_MAX_S:
            raise UsageError("prompt_timeout_s", f"must be > 0 and <= {PROMPT_TIMEOUT_MAX_S}")
        super().__init__(AGENT_INTERFACE)
        self.bus = bus
        self.prompter = prompter
        self.device_path = device_path
        self.device = label_of_path(device_path)
        self.capability = capability
        self.prompt_timeout_s = prompt_timeout_s
        self.path = path
        self.refusal: Refusal | None = None
        """The last question refused for the device being paired, or ``None``."""
        self.released = False
        """BlueZ called ``Release`` (it dropped the agent, e.g. bluetoothd stopped)."""
        self._pending: asyncio.Task[Any] | None = None
        self._canceled = False
        self._shown: int | None = None
        self._registered = False
        self._bluez_owner: str | None = None
        self._log = log.bind(device=self.device)

    # -- registration ------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Export the agent, register it with BlueZ and make it the default agent.

        Raises:
            BleStackUnavailableError: BlueZ is not reachable or refused the registration.
        """
        try:
            (owner,) = await bluez_call(
                self.bus,
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetNameOwner",
                "s",
                [BLUEZ_SERVICE],
                destination="org.freedesktop.DBus",
            )
        except (DBusError, TimeoutError) as exc:
            raise _stack_error("lookup", exc) from None
        self._bluez_owner = str(owner)
        self.bus.add_message_handler(self._only_bluez)
        self.bus.export(self.path, self)
        try:
            await bluez_call(
                self.bus,
                BLUEZ_ROOT_PATH,
                AGENT_MANAGER_INTERFACE,
                "RegisterAgent",
                "os",
                [self.path, self.capability.value],
            )
            self._registered = True
            await bluez_call(
                self.bus,
                BLUEZ_ROOT_PATH,
                AGENT_MANAGER_INTERFACE,
                "RequestDefaultAgent",
                "o",
                [self.path],
            )
        except (DBusError, TimeoutError) as exc:
            await self._unregister()
            self.bus.unexport(self.path, self)
            self.bus.remove_message_handler(self._only_bluez)
            raise _stack_error("agent registration", exc) from None
        self._log.info("bluez_agent_registered", capability=self.capability.value)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel a pending question, unregister (unless BlueZ released us) and unexport."""
        self._cancel_pending()
        try:
            await self._unregister()
        finally:
            self.bus.unexport(self.path, self)
            self.bus.remove_message_handler(self._only_bluez)
        self._log.info("bluez_agent_unregistered")

    def _only_bluez(self, message: Message) -> bool:
        """Refuse any call to the agent that does not come from BlueZ's own connection
        (the owner of ``org.bluez`` at registration): on the system bus another process may
        be allowed to send to us, and must not answer its own pairing's questions."""
        if (
            message.message_type is MessageType.METHOD_CALL
            and message.path == self.path
            and message.sender != self._bluez_owner
        ):
            self._log.warning("bluez_agent_foreign_caller", member=message.member)
            raise DBusError(REJECTED, "only BlueZ may call the agent")
        return False

    async def _unregister(self) -> None:
        if not self._registered:
            return
        self._registered = False
        if self.released or not self.bus.connected:
            return
        try:
            await bluez_call(
                self.bus,
                BLUEZ_ROOT_PATH,
                AGENT_MANAGER_INTERFACE,
                "UnregisterAgent",
                "o",
                [self.path],
            )
        except (DBusError, TimeoutError) as exc:
            # BlueZ restarted or already dropped the agent: nothing of ours is left there.
            what = exc.type if isinstance(exc, DBusError) else type(exc).__name__
            self._log.warning("bluez_agent_unregister_failed", error=what)

    # -- questions -----------------------------------------------------------

    def _refuse(
        self, question: Question, failure: PairingFailure, error: str = REJECTED
    ) -> DBusError:
        """Note the refusal and return the D-Bus error that answers BlueZ."""
        self.refusal = Refusal(question, failure)
        self._log.info("bluez_agent_refused", question=question.value, failure=failure.value)
        return DBusError(error, f"{question.value} {failure.value}")

    def _check_device(self, question: Question, device: str) -> None:
        """Refuse any question about a device other than the one being paired."""
        if device != self.device_path:
            self._log.warning(
                "bluez_agent_wrong_device", question=question.value, other=label_of_path(device)
            )
            raise DBusError(REJECTED, f"{question.value}: not the device being paired")

    async def _ask(self, question: Question, answer: Coroutine[Any, Any, _T]) -> _T:
        """Await the prompter's ``answer`` within the prompt timeout; ``Cancel`` or
        ``Release`` from BlueZ ends it (``Canceled``)."""
        if self._pending is not None:
            # BlueZ asks one question at a time; a second one while the first is open is not
            # BlueZ's doing: refuse it, leave the first alone.
            answer.close()
            raise DBusError(REJECTED, f"{question.value}: another question is open")
        task = asyncio.create_task(answer, name=f"hub.pairing[{self.device}].{question.value}")
        self._pending = task
        self._canceled = False
        try:
            async with asyncio.timeout(self.prompt_timeout_s):
                return await task
        except TimeoutError:
            raise self._refuse(question, PairingFailure.UNANSWERED, CANCELED) from None
        except asyncio.CancelledError:
            if not self._canceled:
                raise  # our own task is being cancelled (shutdown): not BlueZ's Cancel
            raise self._refuse(question, PairingFailure.CANCELED, CANCELED) from None
        finally:
            self._pending = None
            if not task.done():
                task.cancel()

    def _cancel_pending(self) -> bool:
        if self._pending is None or self._pending.done():
            return False
        self._canceled = True
        self._pending.cancel()
        return True

    def abandon(self) -> None:
        """Stop asking: the question open now is answered ``Canceled`` (the pairing's
        deadline passed, so its answer could no longer be used)."""
        if self._cancel_pending():
            self._log.info("bluez_agent_question_abandoned")

    # -- org.bluez.Agent1 --------------------------------------------------------

    @dbus_method(name="Release")
    def release(self) -> NoReply:
        """BlueZ unregistered the agent (bluetoothd stopping, or another agent's request)."""
        self.released = True
        self._cancel_pending()
        self._log.info("bluez_agent_released")

    @dbus_method(name="RequestPinCode")
    def request_pin_code(self, device: DBusObjectPath) -> DBusStr:
        """Legacy PIN pairing is BR/EDR; an LE health device never asks: refused."""
        self._check_device(Question.PIN_CODE, device)
        raise self._refuse(Question.PIN_CODE, PairingFailure.DECLINED)

    @dbus_method(name="DisplayPinCode")
    def display_pin_code(self, device: DBusObjectPath, pincode: DBusStr) -> NoReply:
        """Legacy PIN pairing (BR/EDR keyboards): refused like :meth:`request_pin_code`."""
        self._check_device(Question.PIN_CODE, device)
        raise self._refuse(Question.PIN_CODE, PairingFailure.DECLINED)

    @dbus_method(name="RequestPasskey")
    async def request_passkey(self, device: DBusObjectPath) -> DBusUInt32:
        """The passkey the device displays, as the technician typed it."""
        self._check_device(Question.PASSKEY, device)
        self._log.info("bluez_agent_passkey_requested")
        passkey = await self._ask(Question.PASSKEY, self.prompter.ask_passkey(self.device))
        if passkey is None or not 0 <= passkey <= PASSKEY_MAX:
            raise self._refuse(Question.PASSKEY, PairingFailure.DECLINED)
        self._log.info("bluez_agent_passkey_answered")
        return passkey

    @dbus_method(name="DisplayPasskey")
    async def display_passkey(
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> NoReply:
        """Show the passkey for the technician to type on the device. BlueZ calls again as
        keys are pressed (``entered``); the passkey is shown once."""
        self._check_device(Question.DISPLAY_PASSKEY, device)
        if passkey == self._shown:
            return
        self._shown = passkey
        await self._ask(Question.DISPLAY_PASSKEY, self.prompter.show_passkey(self.device, passkey))
        self._log.info("bluez_agent_passkey_shown")

    @dbus_method(name="RequestConfirmation")
    async def request_confirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> NoReply:
        """Numeric comparison (LE Secure Connections): does the device show ``passkey``?"""
        self._check_device(Question.CONFIRMATION, device)
        self._log.info("bluez_agent_confirmation_requested")
        same = await self._ask(
            Question.CONFIRMATION, self.prompter.confirm_number(self.device, passkey)
        )
        if not same:
            raise self._refuse(Question.CONFIRMATION, PairingFailure.DECLINED)
        self._log.info("bluez_agent_confirmed")

    @dbus_method(name="RequestAuthorization")
    def request_authorization(self, device: DBusObjectPath) -> NoReply:
        """Just Works started by the device: allowed for the device being paired only."""
        self._check_device(Question.AUTHORIZATION, device)
        self._log.info("bluez_agent_authorized")

    @dbus_method(name="AuthorizeService")
    def authorize_service(self, device: DBusObjectPath, uuid: DBusStr) -> NoReply:
        """A service connection of the device being paired is allowed; any other is refused."""
        self._check_device(Question.SERVICE, device)
        self._log.info("bluez_agent_service_authorized", uuid=uuid)

    @dbus_method(name="Cancel")
    def cancel(self) -> NoReply:
        """BlueZ gave up on the pending question (the device canceled, or BlueZ's own
        timeout): it is answered ``Canceled``."""
        if self._cancel_pending():
            self._log.info("bluez_agent_canceled")
