"""Fuzzing the command parser (agent/commands.py) with hypothesis: random bytes, random COSE
structures, random payload maps signed by the platform, single-byte alterations of a valid
command. Every input ends in a Command or a CommandRejectedError with a reason, never in any
other exception; what is not signed by the platform is never accepted and never owed a reply.
"""

from __future__ import annotations

from typing import Any, Final

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.commands import COMMAND_CONTENT_TYPE, Command
from agent.errors import CommandRejectedError, CommandRejection
from tests.test_commands import HUB, IMPOSTOR, NOW, PLATFORM, PLATFORM_KEY, command

FUZZ: Final = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

UNSIGNED: Final = frozenset({CommandRejection.MALFORMED, CommandRejection.FORGED})

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
_keys = st.sampled_from(["v", "hub", "nonce", "iat", "exp", "op", "args", "key", "value"])
cbor_values = st.recursive(
    _scalars | st.builds(cbor2.CBORTag, st.integers(0, 2**16), _scalars),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(_keys | st.integers(-5, 5) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=20,
)


def outcome(message: bytes) -> Command | CommandRejectedError:
    """Parse ``message``; a rejection is returned, any other exception fails the test."""
    try:
        return Command.from_bytes(
            message, hub_id=HUB, platform_key=PLATFORM_KEY.public_key(), now_s=NOW
        )
    except CommandRejectedError as exc:
        rejection = exc
    assert isinstance(rejection.reason, CommandRejection)
    assert rejection.detail
    return rejection


def encode(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(message: bytes) -> None:
    result = outcome(message)
    assert isinstance(result, CommandRejectedError)
    assert (result.reason in UNSIGNED, result.nonce) == (True, None)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_tag_18(body: bytes) -> None:
    result = outcome(b"\xd2" + body)
    assert isinstance(result, CommandRejectedError)
    assert (result.reason in UNSIGNED, result.nonce) == (True, None)


@FUZZ
@given(
    protected=cbor_values | st.binary(max_size=40),
    unprotected=cbor_values,
    payload=cbor_values,
    signature=st.binary(min_size=0, max_size=70) | cbor_values,
)
def test_random_cose_structures(
    protected: Any, unprotected: Any, payload: Any, signature: Any
) -> None:
    """Four random items in a tag 18, as well as headers that look right with a random
    signature: never accepted, no reply."""
    for parts in (
        [protected, unprotected, payload, signature],
        [encode({1: -7, 3: COMMAND_CONTENT_TYPE, 4: PLATFORM.kid}), {}, encode(payload),
         signature if isinstance(signature, bytes) else bytes(64)],
    ):  # fmt: skip
        result = outcome(encode(cbor2.CBORTag(18, parts)))
        assert isinstance(result, CommandRejectedError)
        assert (result.reason in UNSIGNED, result.nonce) == (True, None)


@FUZZ
@given(st.dictionaries(_keys, cbor_values, max_size=8) | cbor_values)
def test_random_payloads_signed_by_the_platform(body: Any) -> None:
    """Whatever the platform signs, the hub answers with a command or a typed rejection; the
    signature verified, so it is never called forged."""
    try:
        payload = encode(body)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return  # not encodable (a tag number cbor2 refuses to write): nothing to send
    result = outcome(PLATFORM.sign(COMMAND_CONTENT_TYPE, payload))
    assert not (
        isinstance(result, CommandRejectedError) and result.reason is CommandRejection.FORGED
    )


@FUZZ
@given(
    op=st.sampled_from(
        ["sync_now", "report_status", "set_config", "announce", "rotate_certificate",
         "install_certificate", "reboot"]
    ),
    args=st.dictionaries(_keys | st.sampled_from(["dictionaries", "cert"]), cbor_values,
                         max_size=3),
)  # fmt: skip
def test_random_args_of_every_op(op: str, args: dict[str, Any]) -> None:
    """Random arguments of a genuine command: parsed, or refused as bad_args / unknown_op /
    malformed (a tag among the arguments), the first two with the nonce for the reply."""
    try:
        message = PLATFORM.command(HUB, op, args, iat=NOW, exp=NOW + 60, nonce=bytes(16))
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return
    result = outcome(message)
    if isinstance(result, CommandRejectedError):
        assert result.reason in (
            CommandRejection.BAD_ARGS,
            CommandRejection.UNKNOWN_OP,
            CommandRejection.MALFORMED,
        )
        # A payload that does not decode at all (a tag in the arguments) has no readable nonce.
        if result.reason is not CommandRejection.MALFORMED:
            assert result.nonce == bytes(16)


VALID: Final = command("set_config", {"key": "mqtt.keepalive_s", "value": 900})
FORGED_VALID: Final = command(signer=IMPOSTOR)


@FUZZ
@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_every_single_byte_alteration_is_refused(where: int, xor: int) -> None:
    altered = bytearray(VALID)
    altered[where] ^= xor
    result = outcome(bytes(altered))
    assert isinstance(result, CommandRejectedError)
    assert (result.reason in UNSIGNED, result.nonce) == (True, None)


@FUZZ
@given(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8))
def test_truncated_or_extended(cut: int, extra: bytes) -> None:
    for message in (VALID[:cut], VALID + extra) if cut < len(VALID) else (VALID + extra,):
        result = outcome(message)
        assert isinstance(result, CommandRejectedError)
        assert result.reason in UNSIGNED


def test_the_unaltered_ones() -> None:
    """The fuzzed originals: one accepted, one forged."""
    assert isinstance(outcome(VALID), Command)
    forged = outcome(FORGED_VALID)
    assert isinstance(forged, CommandRejectedError)
    assert forged.reason is CommandRejection.FORGED
