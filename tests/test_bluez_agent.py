"""The BlueZ pairing agent and bond operations against python-dbusmock's bluez5 template on a
private dbus-daemon (tests/dbus_bluez.py): the real D-Bus protocol end to end.

Issue 8's "done when": registered, asked for a passkey, answers with what was typed, device
trusted; a refused pairing leaves nothing bonded or trusted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import structlog
from dbus_fast.aio import MessageBus

from agent.ble.bluez_agent import (
    AGENT_PATH,
    CANCELED,
    PROMPT_TIMEOUT_MAX_S,
    REJECTED,
    Capability,
    PairingAgent,
    Question,
    Refusal,
)
from agent.ble.bluez_devices import BluezAdapter, Bond, open_adapter
from agent.ble.prompts import RefusingPrompter
from agent.errors import (
    BleDeviceAbsentError,
    BleLinkError,
    BleStackUnavailableError,
    BondExistsError,
    PairingError,
    PairingFailure,
    UsageError,
)
from agent.retry import retryable
from tests import phi_canaries
from tests.dbus_bluez import (
    AgentReply,
    BluezMock,
    PrivateBus,
    add_match,
    connect,
    error_name,
    start_private_bus,
)
from tests.phi_canaries import DEVICE_ADDRESS

LABEL: Final = "..:12:34"
OTHER_ADDRESS: Final = "F0:CA:7A:00:56:78"
PASSKEY: Final = 704_213
QUESTION_TIMEOUT_S: Final = 10.0
"""Bound on waiting for a question to reach the prompter; it arrives in milliseconds."""

# The object path spells the address too: it must never reach a log either.
phi_canaries.plant("full device address (D-Bus path)", DEVICE_ADDRESS.replace(":", "_"))


class ScriptedPrompter:
    """The technician, scripted: what they type and confirm, and what they were asked.

    ``hold``: never answer (a technician who walked away); :attr:`canceled` tells whether
    the question was then withdrawn.
    """

    def __init__(self, passkey: int | None = None, confirm: bool = False, hold: bool = False):
        self.passkey = passkey
        self.confirm = confirm
        self.hold = hold
        self.asked: list[tuple[Any, ...]] = []
        self.question_open = asyncio.Event()
        self.canceled = False

    async def _maybe_hold(self) -> None:
        self.question_open.set()
        if self.hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.canceled = True
                raise

    async def ask_passkey(self, device: str) -> int | None:
        self.asked.append(("passkey", device))
        await self._maybe_hold()
        return self.passkey

    async def confirm_number(self, device: str, number: int) -> bool:
        self.asked.append(("confirm", device, number))
        await self._maybe_hold()
        return self.confirm

    async def show_passkey(self, device: str, passkey: int) -> None:
        self.asked.append(("show", device, passkey))
        await self._maybe_hold()


@pytest.fixture
def system_bus() -> Iterator[PrivateBus]:
    """A private system-flavoured ``dbus-daemon``, stopped after the test."""
    bus = start_private_bus()
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture
async def bluez(system_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[BluezMock]:
    """python-dbusmock's bluez5 template on the private bus, with adapter ``hci0``."""
    mock = await BluezMock.start(system_bus.address, tmp_path / "bluez-mock.log")
    try:
        await mock.add_adapter("hci0")
        yield mock
    finally:
        await mock.stop()


@pytest.fixture
async def adapter(bluez: BluezMock) -> AsyncIterator[BluezAdapter]:
    """The hub's side: hci0 through :func:`open_adapter`, on its own connection."""
    async with open_adapter("hci0", bus_address=bluez.bus_address) as opened:
        yield opened


@pytest.fixture
async def device(bluez: BluezMock) -> str:
    """The glucometer BlueZ has seen (not paired): its object path."""
    return await bluez.add_device(DEVICE_ADDRESS, "Glucometer")


async def _state(bluez: BluezMock, path: str) -> dict[str, Any]:
    props = await bluez.properties(path)
    return {"Paired": props["Paired"], "Trusted": props["Trusted"]}


# ---------------------------------------------------------------------------
# Pairing through BluezAdapter.pair: the template's Pair, bluetoothd asking our agent
# ---------------------------------------------------------------------------


class TestPair:
    async def test_passkey_typed_is_answered_and_device_trusted(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """Registered, asked for a passkey, answers with what was typed, device trusted."""
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        prompter = ScriptedPrompter(passkey=PASSKEY)
        with structlog.testing.capture_logs() as logs:
            bond = await adapter.pair(DEVICE_ADDRESS, prompter)

        assert Bond(device=LABEL, paired=True, bonded=True, trusted=True) == bond
        assert [("passkey", LABEL)] == prompter.asked
        assert [[PASSKEY]] == await bluez.method_calls(device, "AgentAnswered")
        assert {"Paired": True, "Trusted": True} == await _state(bluez, device)
        assert [[AGENT_PATH, "KeyboardDisplay"]] == await bluez.method_calls(
            "/org/bluez", "RegisterAgent"
        )
        assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "RequestDefaultAgent")
        assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "UnregisterAgent")
        assert await adapter.is_bonded(DEVICE_ADDRESS)
        events = [e["event"] for e in logs]
        assert "bluez_paired" in events
        assert str(PASSKEY) not in repr(logs)
        assert all(e.get("device") in (None, LABEL) for e in logs)

    async def test_passkey_refused_leaves_nothing_bonded_or_trusted(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """No passkey typed: PairingError 'declined' (passkey); not paired, not trusted,
        and a Trusted flag set before the attempt is cleared."""
        await bluez.set_property(device, "Trusted", True)
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        with pytest.raises(PairingError) as caught:
            await adapter.pair(DEVICE_ADDRESS, ScriptedPrompter(passkey=None))

        error = caught.value
        assert (PairingFailure.DECLINED, "passkey", "AuthenticationRejected", LABEL) == (
            error.failure,
            error.question,
            error.bluez_error,
            error.device,
        )
        assert not type(error).retryable
        assert DEVICE_ADDRESS not in str(error)
        assert {"Paired": False, "Trusted": False} == await _state(bluez, device)
        assert not await adapter.is_bonded(DEVICE_ADDRESS)
        assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "UnregisterAgent")

    async def test_mistyped_passkey_fails_authentication(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """A passkey that is not the one displayed: BlueZ AuthenticationFailed, nothing kept."""
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        with pytest.raises(PairingError) as caught:
            await adapter.pair(DEVICE_ADDRESS, ScriptedPrompter(passkey=PASSKEY + 1))

        assert (PairingFailure.FAILED, None, "AuthenticationFailed") == (
            caught.value.failure,
            caught.value.question,
            caught.value.bluez_error,
        )
        assert [[PASSKEY + 1]] == await bluez.method_calls(device, "AgentAnswered")
        assert {"Paired": False, "Trusted": False} == await _state(bluez, device)

    @pytest.mark.parametrize(("confirm", "paired"), [(True, True), (False, False)])
    async def test_numeric_comparison(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str, confirm: bool, paired: bool
    ) -> None:
        """RequestConfirmation shows BlueZ's number; a yes pairs and trusts, a no refuses."""
        await bluez.pair_asks_agent(
            device,
            adapter.bus.unique_name or "",
            question="RequestConfirmation",
            displayed=PASSKEY,
        )
        prompter = ScriptedPrompter(confirm=confirm)
        if confirm:
            bond = await adapter.pair(DEVICE_ADDRESS, prompter)
            assert (True, True) == (bond.paired, bond.trusted)
        else:
            with pytest.raises(PairingError) as caught:
                await adapter.pair(DEVICE_ADDRESS, prompter)
            assert (PairingFailure.DECLINED, "confirmation") == (
                caught.value.failure,
                caught.value.question,
            )
        assert [("confirm", LABEL, PASSKEY)] == prompter.asked
        assert {"Paired": paired, "Trusted": paired} == await _state(bluez, device)

    async def test_just_works_unattended(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """NoInputNoOutput with nobody to ask: the template's own Pair completes, trusted."""
        bond = await adapter.pair(
            DEVICE_ADDRESS, RefusingPrompter(), capability=Capability.NO_INPUT_NO_OUTPUT
        )

        assert Bond(device=LABEL, paired=True, bonded=True, trusted=True) == bond
        assert [[AGENT_PATH, "NoInputNoOutput"]] == await bluez.method_calls(
            "/org/bluez", "RegisterAgent"
        )
        assert [[]] == await bluez.method_calls(device, "Pair")

    async def test_prompt_timeout_answers_canceled(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """Nobody answers within the prompt timeout: the question is withdrawn, BlueZ gets
        Canceled, PairingError 'unanswered'; nothing kept."""
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        prompter = ScriptedPrompter(hold=True)
        with pytest.raises(PairingError) as caught:
            await adapter.pair(DEVICE_ADDRESS, prompter, prompt_timeout_s=0.2)

        assert (PairingFailure.UNANSWERED, "passkey", "AuthenticationCanceled") == (
            caught.value.failure,
            caught.value.question,
            caught.value.bluez_error,
        )
        assert prompter.canceled
        assert [] == await bluez.method_calls(device, "AgentAnswered")
        assert {"Paired": False, "Trusted": False} == await _state(bluez, device)

    async def test_pairing_deadline_cancels_question_and_pairing(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """Past the pairing deadline the open question is withdrawn, CancelPairing is sent,
        and PairingError says 'timeout' (the hub's deadline: no BlueZ error)."""
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        prompter = ScriptedPrompter(hold=True)
        with pytest.raises(PairingError) as caught:
            await adapter.pair(DEVICE_ADDRESS, prompter, timeout_s=0.3)

        assert (PairingFailure.TIMEOUT, None) == (caught.value.failure, caught.value.bluez_error)
        assert prompter.canceled
        assert [[]] == await bluez.method_calls(device, "CancelPairing")
        assert {"Paired": False, "Trusted": False} == await _state(bluez, device)

    @pytest.mark.parametrize(
        ("bluez_error", "expected", "failure"),
        [
            ("AuthenticationRejected", PairingError, PairingFailure.REJECTED),
            ("AuthenticationCanceled", PairingError, PairingFailure.CANCELED),
            ("AuthenticationFailed", PairingError, PairingFailure.FAILED),
            ("AuthenticationTimeout", PairingError, PairingFailure.TIMEOUT),
            ("Failed", PairingError, PairingFailure.FAILED),
            ("ConnectionAttemptFailed", BleLinkError, None),
            ("InProgress", BleLinkError, None),
            ("NotReady", BleStackUnavailableError, None),
            ("AlreadyExists", BondExistsError, None),
        ],
    )
    async def test_bluez_errors_map_by_type(
        self,
        bluez: BluezMock,
        adapter: BluezAdapter,
        device: str,
        bluez_error: str,
        expected: type[Exception],
        failure: PairingFailure | None,
    ) -> None:
        """Each BlueZ answer to Pair() becomes the hub error of its class (retry decided by
        the class: only link faults are retryable); a Trusted flag set before is cleared."""
        await bluez.set_property(device, "Trusted", True)
        await bluez.pair_fails_with(device, "org.bluez.Error." + bluez_error)
        with pytest.raises(expected) as caught:
            await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())

        error = caught.value
        assert expected is type(error)
        assert issubclass(expected, BleLinkError) == retryable(error)
        if isinstance(error, PairingError):
            assert (failure, bluez_error, None) == (
                error.failure,
                error.bluez_error,
                error.question,
            )
        assert DEVICE_ADDRESS not in str(error)
        # A bond BlueZ says exists is not ours to touch; anything else is undone.
        kept = expected is BondExistsError
        assert {"Paired": False, "Trusted": kept} == await _state(bluez, device)

    async def test_cancelled_pairing_is_undone(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """The technician gives up (the pairing task is cancelled) while being asked: the
        question is withdrawn, CancelPairing is sent, nothing is left trusted."""
        await bluez.set_property(device, "Trusted", True)
        await bluez.pair_asks_agent(device, adapter.bus.unique_name or "", displayed=PASSKEY)
        prompter = ScriptedPrompter(hold=True)
        pairing = asyncio.create_task(adapter.pair(DEVICE_ADDRESS, prompter))
        async with asyncio.timeout(QUESTION_TIMEOUT_S):
            await prompter.question_open.wait()
        pairing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pairing

        assert prompter.canceled
        assert [[]] == await bluez.method_calls(device, "CancelPairing")
        assert {"Paired": False, "Trusted": False} == await _state(bluez, device)
        assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "UnregisterAgent")

    async def test_already_paired_is_left_alone(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """Pairing a paired device: BondExistsError; the bond and its trust stay."""
        await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())
        with pytest.raises(BondExistsError) as caught:
            await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())

        assert LABEL == caught.value.device
        assert {"Paired": True, "Trusted": True} == await _state(bluez, device)
        assert [[]] == await bluez.method_calls(device, "Pair")  # the second never reached BlueZ

    async def test_unknown_device(self, adapter: BluezAdapter) -> None:
        """A device BlueZ never saw: BleDeviceAbsentError (scan first), no agent registered."""
        with pytest.raises(BleDeviceAbsentError) as caught:
            await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())
        assert LABEL == caught.value.device

    async def test_not_an_address(self, adapter: BluezAdapter) -> None:
        """A malformed address is the caller's error, and its value is not repeated."""
        with pytest.raises(UsageError) as caught:
            await adapter.pair("F0:CA:7A:00:12", RefusingPrompter())
        assert "address" == caught.value.argument
        assert "F0:CA" not in str(caught.value)


# ---------------------------------------------------------------------------
# The agent alone: the test's connection asks it, as bluetoothd would
# ---------------------------------------------------------------------------


class TestAgent:
    @pytest.fixture
    async def hub_bus(self, bluez: BluezMock) -> AsyncIterator[MessageBus]:
        bus = await connect(bluez.bus_address)
        try:
            yield bus
        finally:
            bus.disconnect()

    async def _ask(
        self,
        bluez: BluezMock,
        hub_bus: MessageBus,
        member: str,
        args: list[tuple[str, Any]] | None = None,
    ) -> AgentReply:
        """``member`` asked by BlueZ (the mock's connection) of the agent on ``hub_bus``."""
        return await bluez.ask(hub_bus.unique_name or "", AGENT_PATH, member, args)

    async def test_registered_then_unregistered_and_unexported(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """Entering registers and requests default; leaving unregisters and unexports."""
        agent = PairingAgent(hub_bus, ScriptedPrompter(passkey=1), device_path=device)
        async with agent:
            assert [[AGENT_PATH, "KeyboardDisplay"]] == await bluez.method_calls(
                "/org/bluez", "RegisterAgent"
            )
            assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "RequestDefaultAgent")
            assert AgentReply(None, "1") == await self._ask(
                bluez, hub_bus, "RequestPasskey", [("o", device)]
            )
        assert [[AGENT_PATH]] == await bluez.method_calls("/org/bluez", "UnregisterAgent")
        after = await self._ask(bluez, hub_bus, "RequestPasskey", [("o", device)])
        assert "org.freedesktop.DBus.Error.UnknownMethod" == after.error  # dbus-fast: no object

    async def test_release_by_bluez(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """Release (BlueZ dropped the agent) withdraws an open question; leaving then does
        not unregister what BlueZ already forgot."""
        prompter = ScriptedPrompter(hold=True)
        async with PairingAgent(hub_bus, prompter, device_path=device) as agent:
            asked = asyncio.create_task(
                self._ask(bluez, hub_bus, "RequestPasskey", [("o", device)])
            )
            async with asyncio.timeout(QUESTION_TIMEOUT_S):
                await prompter.question_open.wait()
            assert AgentReply(None) == await self._ask(bluez, hub_bus, "Release")
            assert AgentReply(CANCELED) == await asked
            assert agent.released
        assert [] == await bluez.method_calls("/org/bluez", "UnregisterAgent")

    async def test_only_bluez_may_ask(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """A question from any connection but BlueZ's (the owner of org.bluez) is Rejected
        and never reaches the technician, even about the device being paired."""
        prompter = ScriptedPrompter(passkey=PASSKEY, confirm=True)
        async with PairingAgent(hub_bus, prompter, device_path=device):
            owner = hub_bus.unique_name or ""
            replies = [
                await bluez.call_as_stranger(owner, AGENT_PATH, "RequestPasskey", "o", [device]),
                await bluez.call_as_stranger(
                    owner, AGENT_PATH, "RequestConfirmation", "ou", [device, 1]
                ),
                await bluez.call_as_stranger(owner, AGENT_PATH, "Cancel", "", []),
            ]
            assert [REJECTED] * 3 == [error_name(r) for r in replies]
            assert [] == prompter.asked

    async def test_cancel_withdraws_the_open_question(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """Cancel while the technician is being asked: the question is withdrawn and
        RequestPasskey is answered Canceled."""
        prompter = ScriptedPrompter(hold=True)
        async with PairingAgent(hub_bus, prompter, device_path=device) as agent:
            asked = asyncio.create_task(
                self._ask(bluez, hub_bus, "RequestPasskey", [("o", device)])
            )
            async with asyncio.timeout(QUESTION_TIMEOUT_S):
                await prompter.question_open.wait()
            cancel = await self._ask(bluez, hub_bus, "Cancel")
            reply = await asked

            assert AgentReply(None) == cancel
            assert AgentReply(CANCELED) == reply
            assert prompter.canceled
            assert Refusal(Question.PASSKEY, PairingFailure.CANCELED) == agent.refusal

    async def test_other_device_is_refused_without_asking(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """Every question about a device other than the one being paired is Rejected and
        never reaches the technician; the device being paired is served."""
        other = await bluez.add_device(OTHER_ADDRESS, "Cuff")
        prompter = ScriptedPrompter(passkey=PASSKEY, confirm=True)
        uuid = "00001808-0000-1000-8000-00805f9b34fb"
        async with PairingAgent(hub_bus, prompter, device_path=device) as agent:
            replies = [
                await self._ask(bluez, hub_bus, "RequestPasskey", [("o", other)]),
                await self._ask(bluez, hub_bus, "RequestConfirmation", [("o", other), ("u", 1)]),
                await self._ask(
                    bluez, hub_bus, "DisplayPasskey", [("o", other), ("u", 1), ("q", 0)]
                ),
                await self._ask(bluez, hub_bus, "RequestAuthorization", [("o", other)]),
                await self._ask(bluez, hub_bus, "AuthorizeService", [("o", other), ("s", uuid)]),
            ]
            assert [AgentReply(REJECTED)] * 5 == replies
            assert [] == prompter.asked
            assert None is agent.refusal

            served = [
                await self._ask(bluez, hub_bus, "RequestAuthorization", [("o", device)]),
                await self._ask(bluez, hub_bus, "AuthorizeService", [("o", device), ("s", uuid)]),
            ]
            assert [AgentReply(None)] * 2 == served

    async def test_legacy_pin_is_refused(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """RequestPinCode and DisplayPinCode (BR/EDR legacy) are Rejected, the technician
        is not asked."""
        prompter = ScriptedPrompter(passkey=PASSKEY)
        async with PairingAgent(hub_bus, prompter, device_path=device) as agent:
            replies = [
                await self._ask(bluez, hub_bus, "RequestPinCode", [("o", device)]),
                await self._ask(bluez, hub_bus, "DisplayPinCode", [("o", device), ("s", "0000")]),
            ]
            assert [AgentReply(REJECTED)] * 2 == replies
            assert Refusal(Question.PIN_CODE, PairingFailure.DECLINED) == agent.refusal
            assert [] == prompter.asked

    async def test_display_passkey_shows_it_once(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """DisplayPasskey repeated as keys are pressed shows the passkey once."""
        prompter = ScriptedPrompter()
        async with PairingAgent(hub_bus, prompter, device_path=device):
            replies = [
                await self._ask(
                    bluez, hub_bus, "DisplayPasskey", [("o", device), ("u", PASSKEY), ("q", n)]
                )
                for n in range(3)
            ]
        assert [AgentReply(None)] * 3 == replies
        assert [("show", LABEL, PASSKEY)] == prompter.asked

    async def test_out_of_range_passkey_is_refused(
        self, bluez: BluezMock, hub_bus: MessageBus, device: str
    ) -> None:
        """A 'passkey' above 999999 is no passkey: Rejected."""
        prompter = ScriptedPrompter(passkey=1_000_000)
        async with PairingAgent(hub_bus, prompter, device_path=device) as agent:
            reply = await self._ask(bluez, hub_bus, "RequestPasskey", [("o", device)])
            assert AgentReply(REJECTED) == reply
            assert Refusal(Question.PASSKEY, PairingFailure.DECLINED) == agent.refusal

    async def test_prompt_timeout_is_bounded(self) -> None:
        """A prompt timeout above 30 s (or not positive) is refused at construction."""
        bus = MessageBus(bus_address="unix:path=/nonexistent")  # never connected
        for bad in (PROMPT_TIMEOUT_MAX_S + 1, 0.0):
            with pytest.raises(UsageError) as caught:
                PairingAgent(bus, RefusingPrompter(), device_path="/x", prompt_timeout_s=bad)
            assert "prompt_timeout_s" == caught.value.argument


# ---------------------------------------------------------------------------
# Bonds and the adapter
# ---------------------------------------------------------------------------


class TestBonds:
    async def test_remove_deletes_the_bond(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """remove(): Adapter1.RemoveDevice of the device's path; BlueZ forgets it."""
        await adapter.pair(DEVICE_ADDRESS, RefusingPrompter())
        assert await adapter.is_bonded(DEVICE_ADDRESS)

        assert await adapter.remove(DEVICE_ADDRESS)
        assert [[device]] == await bluez.method_calls("/org/bluez/hci0", "RemoveDevice")
        assert None is await adapter.device_path(DEVICE_ADDRESS)
        assert not await adapter.is_bonded(DEVICE_ADDRESS)
        assert not await adapter.remove(DEVICE_ADDRESS)

    async def test_device_path_by_address(
        self, bluez: BluezMock, adapter: BluezAdapter, device: str
    ) -> None:
        """The device's path is found by its address, in any letter case."""
        assert device == await adapter.device_path(DEVICE_ADDRESS.lower())
        assert None is await adapter.device_path(OTHER_ADDRESS)

    async def test_power_cycle(self, bluez: BluezMock, adapter: BluezAdapter) -> None:
        """power_cycle(): Powered false then true, seen as BlueZ's PropertiesChanged."""
        seen: list[bool] = []

        def on_message(message: Any) -> None:
            if message.member == "PropertiesChanged" and message.path == "/org/bluez/hci0":
                changed = message.body[1]
                if "Powered" in changed:
                    seen.append(changed["Powered"].value)

        bluez.control.add_message_handler(on_message)
        await add_match(
            bluez.control,
            "type='signal',interface='org.freedesktop.DBus.Properties',path='/org/bluez/hci0'",
        )
        await adapter.power_cycle()
        # The mock emitted both signals before answering; a round trip from the same
        # connection delivers everything it sent before.
        props = await bluez.properties("/org/bluez/hci0", "org.bluez.Adapter1")

        assert [False, True] == seen
        assert props["Powered"] is True


class TestStack:
    async def test_missing_adapter(self, bluez: BluezMock) -> None:
        """An adapter BlueZ does not have: BleStackUnavailableError at open."""
        with pytest.raises(BleStackUnavailableError):
            async with open_adapter("hci1", bus_address=bluez.bus_address):
                pass

    async def test_no_bluez_on_the_bus(self, system_bus: PrivateBus) -> None:
        """A bus without BlueZ: BleStackUnavailableError, not a D-Bus traceback."""
        with pytest.raises(BleStackUnavailableError):
            async with open_adapter("hci0", bus_address=system_bus.address):
                pass

    @pytest.mark.parametrize("address", ["unix:path={tmp}/none", "nonsense:what=ever"])
    async def test_no_bus(self, tmp_path: Path, address: str) -> None:
        """No D-Bus at all, or an address that is none: BleStackUnavailableError."""
        with pytest.raises(BleStackUnavailableError):
            async with open_adapter("hci0", bus_address=address.format(tmp=tmp_path)):
                pass
