"""Commands from the platform (agent/commands.py): built by the reference platform's signer
(hil/platform_signing.py, pycose), verified and parsed into typed commands, refused with a
typed reason, answered with a signed reply that pycose verifies.

The wall clock is the named mock edge (:class:`FakeWallClock`); nothing sleeps.
"""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent import command_nonces, commands, config, cose
from agent.cert_rotation import CertificateSlots
from agent.command_nonces import MAX_SKEW_S, NonceFile
from agent.commands import (
    COMMAND_CONTENT_TYPE,
    REPLY_CONTENT_TYPE,
    SETTABLE_KEYS,
    Announce,
    Command,
    CommandDesk,
    InstallCertificate,
    Op,
    ReportStatus,
    RotateCertificate,
    SetConfig,
    SyncNow,
)
from agent.errors import CommandRejectedError, CommandRejection, KeyMaterialError
from agent.ingest import Signer
from agent.security import SecurityEvent
from hil.pki import DevPki
from hil.platform_signing import PlatformSigner, verify_platform_message
from tests.example_config import EXAMPLE

HUB: Final = "hub-0001"
NOW: Final = 1_800_000_000
NONCE: Final = bytes(range(16))

PLATFORM_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub platform test key 012345", "big"), ec.SECP256R1()
)
OTHER_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub not the platform key 012", "big"), ec.SECP256R1()
)
HUB_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub hub signing test key 012", "big"), ec.SECP256R1()
)
PLATFORM: Final = PlatformSigner(PLATFORM_KEY)
IMPOSTOR: Final = PlatformSigner(OTHER_KEY)


class FakeWallClock:
    """Unix seconds that only move when a test says so (the commands' clock edge)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def command(
    op: str = "sync_now",
    args: dict[str, Any] | None = None,
    *,
    hub: str = HUB,
    iat: int = NOW,
    exp: int = NOW + 600,
    nonce: bytes | None = NONCE,
    signer: PlatformSigner = PLATFORM,
) -> bytes:
    return signer.command(hub, op, args or {}, iat=iat, exp=exp, nonce=nonce)


def signed_body(body: dict[Any, Any] | bytes, content_type: str = COMMAND_CONTENT_TYPE) -> bytes:
    """A platform-signed message with exactly ``body`` (a map, or raw payload bytes)."""
    return PLATFORM.sign(content_type, body)


def base_body(**override: Any) -> dict[Any, Any]:
    body: dict[Any, Any] = {
        "v": 1,
        "hub": HUB,
        "nonce": NONCE,
        "iat": NOW,
        "exp": NOW + 600,
        "op": "sync_now",
        "args": {},
    }
    body.update(override)
    return body


def parse(message: bytes, now: int = NOW) -> Command:
    return Command.from_bytes(
        message, hub_id=HUB, platform_key=PLATFORM_KEY.public_key(), now_s=now
    )


def rejected(message: bytes, now: int = NOW) -> CommandRejectedError:
    with pytest.raises(CommandRejectedError) as caught:
        parse(message, now)
    return caught.value


# ---------------------------------------------------------------------------
# The core: bytes in, a typed command or a typed rejection out
# ---------------------------------------------------------------------------


class TestParse:
    @pytest.mark.parametrize(
        ("op", "args", "action"),
        [
            ("sync_now", {}, SyncNow()),
            ("report_status", {}, ReportStatus()),
            (
                "set_config",
                {"key": "ble.cycle_interval_s", "value": 45.5},
                SetConfig("ble.cycle_interval_s", 45.5),
            ),
            (
                "set_config",
                {"key": "ble.set_device_clock", "value": False},
                SetConfig("ble.set_device_clock", False),
            ),
            ("announce", {"dictionaries": [7, 3, 7]}, Announce((3, 7))),
            ("announce", {"dictionaries": []}, Announce(())),
            ("rotate_certificate", {}, RotateCertificate()),
            ("install_certificate", {"cert": b"\x30\x82"}, InstallCertificate(b"\x30\x82")),
        ],
    )
    def test_each_op_into_its_dataclass(self, op: str, args: dict[str, Any], action: Any) -> None:
        parsed = parse(command(op, args))
        assert (parsed.nonce, parsed.issued_at_s, parsed.expires_at_s, parsed.action) == (
            NONCE,
            NOW,
            NOW + 600,
            action,
        )
        assert parsed.op == Op(op)

    def test_set_config_value_type_is_kept(self) -> None:
        """An int stays an int (the loader, not the parser, decides what a key takes)."""
        action = parse(command("set_config", {"key": "mqtt.keepalive_s", "value": 600})).action
        assert isinstance(action, SetConfig)
        assert (type(action.value), action.value) == (int, 600)

    def test_value_not_in_repr(self) -> None:
        """A command's repr (a log line by mistake) shows the key, not the value."""
        assert "424242" not in repr(SetConfig("mqtt.keepalive_s", 424242))
        assert "cafe" not in repr(InstallCertificate(bytes.fromhex("cafe")))


class TestForged:
    def test_another_key_with_its_own_kid(self) -> None:
        exc = rejected(command(signer=IMPOSTOR))
        assert (exc.reason, exc.detail, exc.nonce, exc.op) == (
            CommandRejection.FORGED,
            "kid is not the platform key's",
            None,
            None,
        )

    def test_another_key_under_the_platform_kid(self) -> None:
        payload = cbor2.dumps(base_body(), canonical=True)
        message = cose.sign1(payload, OTHER_KEY, PLATFORM.kid, COMMAND_CONTENT_TYPE)
        exc = rejected(message)
        assert (exc.reason, exc.detail, exc.nonce) == (
            CommandRejection.FORGED,
            "signature does not verify",
            None,
        )

    @pytest.mark.parametrize("where", [-1, -40, -64])
    def test_altered_signature(self, where: int) -> None:
        message = bytearray(command())
        message[where] ^= 0x01
        assert rejected(bytes(message)).reason is CommandRejection.FORGED

    def test_altered_payload(self) -> None:
        """The hub id inside the payload changed after signing: forged, not wrong_hub."""
        message = command(hub="hub-0002")
        altered = message.replace(b"hub-0002", HUB.encode())
        assert altered != message
        assert rejected(altered).reason is CommandRejection.FORGED

    def test_security_flag(self) -> None:
        assert [r.value for r in CommandRejection if r.security] == [
            "forged",
            "wrong_hub",
            "expired",
            "replayed",
        ]


class TestMalformed:
    @pytest.mark.parametrize(
        "message",
        [b"", b"\x00", b"\xd2", b"\xd2\x84", b"\xd8\x12\x80", cbor2.dumps({"op": "sync_now"})],
    )
    def test_not_a_cose_sign1(self, message: bytes) -> None:
        exc = rejected(message)
        assert (exc.reason, exc.nonce) == (CommandRejection.MALFORMED, None)

    def test_a_receipt_on_the_commands_topic(self) -> None:
        """Signed by the platform, but not a command: malformed, and no reply is owed."""
        receipt = PLATFORM.receipt(HUB, [(bytes(16), [1])], iat=NOW, exp=NOW + 60)
        exc = rejected(receipt)
        assert (exc.reason, exc.detail, exc.nonce) == (
            CommandRejection.MALFORMED,
            "signed by the platform key, but not a command envelope",
            None,
        )

    @pytest.mark.parametrize(
        "payload",
        [
            b"",
            b"\xa1",  # truncated
            cbor2.dumps([1, 2]),
            cbor2.dumps(base_body()) + b"\x00",  # trailing byte
            b"\xa2\x61v\x01\x61v\x01",  # duplicate key
            b"\xbf\x61v\x01\xff",  # indefinite-length map
            cbor2.dumps(cbor2.CBORTag(55799, base_body())),  # self-described CBOR tag
            b"\xa1\x61v\x18\x01",  # {"v": 1} with the 1 in two bytes: not deterministic
        ],
    )
    def test_bad_cbor_payload(self, payload: bytes) -> None:
        exc = rejected(signed_body(payload))
        assert (exc.reason, exc.nonce) == (CommandRejection.MALFORMED, None)

    @pytest.mark.parametrize(
        ("change", "detail"),
        [
            ({"v": 2}, "v is not 1"),
            ({"v": True}, "v is not 1"),
            ({"hub": 1}, "hub is not a text string"),
            ({"iat": -1}, "iat or exp is not a uint"),
            ({"exp": float(NOW + 600)}, "iat or exp is not a uint"),
            ({"iat": cbor2.CBORTag(2, b"\x01")}, None),  # a bignum: a tag, refused as CBOR
            ({"op": 7}, "op is not a short text string"),
            ({"op": "x" * 65}, "op is not a short text string"),
            ({"args": []}, "args is not a map of text keys"),
            ({"args": {1: 2}}, "args is not a map of text keys"),
            ({"exp": NOW + 3601}, "exp - iat is not within 0..3600 s"),
            ({"exp": NOW - 1}, "exp - iat is not within 0..3600 s"),
            ({"extra": 1}, "fields are not exactly v, hub, nonce, iat, exp, op, args"),
            ({1: 1}, "fields are not exactly v, hub, nonce, iat, exp, op, args"),
        ],
    )
    def test_fields(self, change: dict[Any, Any], detail: str | None) -> None:
        """A mistyped field: malformed; the nonce is readable, so a reply is owed."""
        exc = rejected(signed_body({**base_body(), **change}))
        assert exc.reason is CommandRejection.MALFORMED
        if detail is not None:
            op = None if "op" in change else "sync_now"
            assert (exc.detail, exc.nonce, exc.op) == (detail, NONCE, op)

    @pytest.mark.parametrize("nonce", [b"", bytes(15), bytes(17), "0" * 16])
    def test_nonce(self, nonce: Any) -> None:
        exc = rejected(signed_body(base_body(nonce=nonce)))
        assert (exc.reason, exc.nonce) == (CommandRejection.MALFORMED, None)

    def test_missing_field(self) -> None:
        body = base_body()
        del body["exp"]
        assert rejected(signed_body(body)).reason is CommandRejection.MALFORMED


class TestHubTimeOp:
    def test_wrong_hub(self) -> None:
        exc = rejected(command(hub="hub-0002"))
        assert (exc.reason, exc.nonce, exc.op) == (CommandRejection.WRONG_HUB, NONCE, "sync_now")

    @pytest.mark.parametrize(
        ("now", "accepted"),
        [
            (NOW - MAX_SKEW_S - 1, False),
            (NOW - MAX_SKEW_S, True),
            (NOW - 900, True),  # 15 minutes behind: the network's time leaves it alone
            (NOW, True),
            (NOW + 600, True),
            (NOW + 601, False),
        ],
    )
    def test_window(self, now: int, accepted: bool) -> None:
        """``iat - MAX_SKEW_S <= now <= exp``, both ends included."""
        if accepted:
            assert parse(command(), now).nonce == NONCE
        else:
            exc = rejected(command(), now)
            assert (exc.reason, exc.nonce) == (CommandRejection.EXPIRED, NONCE)

    def test_unknown_op(self) -> None:
        exc = rejected(command("reboot"))
        assert (exc.reason, exc.op, exc.nonce) == (CommandRejection.UNKNOWN_OP, None, NONCE)


class TestBadArgs:
    @pytest.mark.parametrize(
        ("op", "args", "detail"),
        [
            ("sync_now", {"now": True}, "arguments are not exactly: none"),
            ("rotate_certificate", {"cn": "x"}, "arguments are not exactly: none"),
            ("set_config", {"key": "ble.max_connections"}, "arguments are not exactly: key, value"),
            ("set_config", {"key": 1, "value": 1}, "key is not one set_config may set"),
            ("set_config", {"key": "ble.max_connections", "value": [1]},
             "value is not an int, float, bool or text"),
            ("set_config", {"key": "ble.max_connections", "value": None},
             "value is not an int, float, bool or text"),
            ("set_config", {"key": "ble.max_connections", "value": "x" * 257},
             "value is longer than 256 characters"),
            ("announce", {"dictionaries": 3}, "dictionaries is not an array of at most 64"),
            ("announce", {"dictionaries": list(range(1, 66))},
             "dictionaries is not an array of at most 64"),
            ("announce", {"dictionaries": [0]}, "a dictionary id is not a uint in 1..4294967295"),
            ("announce", {"dictionaries": [2**32]},
             "a dictionary id is not a uint in 1..4294967295"),
            ("announce", {"dictionaries": [True]},
             "a dictionary id is not a uint in 1..4294967295"),
            ("install_certificate", {"cert": "PEM"}, "cert is not a byte string of 1..16384"),
            ("install_certificate", {"cert": b""}, "cert is not a byte string of 1..16384"),
            ("install_certificate", {"cert": bytes(16385)},
             "cert is not a byte string of 1..16384"),
        ],
    )  # fmt: skip
    def test_rejected(self, op: str, args: dict[str, Any], detail: str) -> None:
        exc = rejected(command(op, args))
        assert (exc.reason, exc.detail, exc.op, exc.nonce) == (
            CommandRejection.BAD_ARGS,
            detail,
            op,
            NONCE,
        )

    @pytest.mark.parametrize(
        "key",
        [
            "hub.id",
            "hub.state_dir",
            "hub.timezone",
            "patient.id",
            "mqtt.host",
            "mqtt.port",
            "mqtt.ca_file",
            "mqtt.cert_file",
            "mqtt.key_file",
            "signing.key_file",
            "outbox.path",
            "outbox.key_file",
            "keys.provider",
            "keys.kek_file",
            "devices",
            "ble.stack",
            "platform.cert_file",
        ],
    )
    def test_identity_keys_hosts_and_files_are_never_settable(self, key: str) -> None:
        exc = rejected(command("set_config", {"key": key, "value": "x"}))
        assert (exc.reason, exc.detail) == (
            CommandRejection.BAD_ARGS,
            "key is not one set_config may set",
        )


class TestSettableKeys:
    def test_every_key_is_in_the_schema_and_none_is_a_path_or_identity(self) -> None:
        for key in SETTABLE_KEYS:
            section, name = key.split(".")
            field = config.SCHEMA[section][name]
            assert field.type in (int, float, bool), key
            assert section not in ("hub", "patient", "signing", "keys", "outbox"), key

    def test_strict_decoder_refuses_the_same_tags_as_cose(self) -> None:
        assert commands._KNOWN_SEMANTIC_TAGS == cose._KNOWN_SEMANTIC_TAGS


# ---------------------------------------------------------------------------
# The desk: nonce memory, audit lines, replies, set_config on a real file
# ---------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The shipped example configuration (comments and all), mode 0640."""
    path = tmp_path / "homehub.toml"
    path.write_text(EXAMPLE.read_text())
    path.chmod(0o640)
    return path


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock()


def make_desk(
    tmp_path: Path,
    config_file: Path,
    clock: FakeWallClock,
    *,
    max_nonces: int = command_nonces.MAX_NONCES,
    client_ca: x509.Certificate | None = None,
) -> CommandDesk:
    """A desk over ``tmp_path/state``: what the daemon builds at each start."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    return CommandDesk(
        hub_id=HUB,
        platform_key=PLATFORM_KEY.public_key(),
        signer=Signer.from_key(HUB_KEY),
        nonces=NonceFile(state / command_nonces.FILE_NAME, clock, max_nonces=max_nonces),
        clock=clock,
        config_path=config_file,
        slots=CertificateSlots(keys / "hub.crt", keys / "hub.key"),
        client_ca=client_ca,
    )


@pytest.fixture
def desk(tmp_path: Path, config_file: Path, clock: FakeWallClock) -> CommandDesk:
    return make_desk(tmp_path, config_file, clock)


def reply_of(reply: bytes | None) -> dict[str, Any]:
    """The reply's payload, verified by pycose (independent of agent/cose.py) with the hub's
    public key, and by agent/cose.py."""
    assert reply is not None
    cose.verify1(reply, HUB_KEY.public_key(), expected_content_type=REPLY_CONTENT_TYPE)
    return verify_platform_message(reply, HUB_KEY.public_key(), REPLY_CONTENT_TYPE)


class TestDesk:
    def test_accepted_and_answered(self, desk: CommandDesk) -> None:
        with structlog.testing.capture_logs() as logs:
            handled = desk.handle(command("sync_now"))
        assert handled.command is not None
        assert (handled.command.action, handled.ok, handled.rejection, handled.security) == (
            SyncNow(),
            True,
            None,
            False,
        )
        assert reply_of(handled.reply) == {
            "v": 1,
            "hub": HUB,
            "nonce": NONCE,
            "op": "sync_now",
            "ok": True,
        }
        assert [(e["event"], e["op"], e["nonce"]) for e in logs] == [
            ("command_accepted", "sync_now", NONCE.hex())
        ]

    def test_replayed_is_refused_and_answered(self, desk: CommandDesk) -> None:
        message = command("report_status")
        assert desk.handle(message).ok
        with structlog.testing.capture_logs() as logs:
            again = desk.handle(message)
        assert (again.command, again.ok, again.rejection, again.security) == (
            None,
            False,
            CommandRejection.REPLAYED,
            True,
        )
        assert reply_of(again.reply) == {
            "v": 1,
            "hub": HUB,
            "nonce": NONCE,
            "op": "report_status",
            "ok": False,
            "error": "replayed",
        }
        assert [(e["event"], e["reason"], e["op"], e["security"]) for e in logs] == [
            ("command_rejected", "replayed", "report_status", True)
        ]
        assert (desk.security_events, desk.rejections[CommandRejection.REPLAYED]) == (1, 1)

    def test_replay_across_a_restart(
        self, tmp_path: Path, config_file: Path, clock: FakeWallClock
    ) -> None:
        """A new desk (a restarted daemon) reads the nonces back from the state directory."""
        message = command("sync_now", exp=NOW + 3600)
        assert make_desk(tmp_path, config_file, clock).handle(message).ok
        clock.now = NOW + 3000
        restarted = make_desk(tmp_path, config_file, clock)
        assert restarted.handle(message).rejection is CommandRejection.REPLAYED
        nonce_file = tmp_path / "state" / command_nonces.FILE_NAME
        assert stat.S_IMODE(nonce_file.stat().st_mode) == 0o600

    def test_forged_gets_no_reply(self, desk: CommandDesk) -> None:
        with structlog.testing.capture_logs() as logs:
            handled = desk.handle(command(signer=IMPOSTOR))
        assert (handled.reply, handled.rejection, handled.security) == (
            None,
            CommandRejection.FORGED,
            True,
        )
        assert [(e["event"], e["reason"], e["op"], e["nonce"]) for e in logs] == [
            ("command_rejected", "forged", None, None)
        ]
        # A forged nonce is not remembered: the genuine command with it still runs.
        assert desk.handle(command()).ok

    def test_garbage_is_malformed_not_a_security_event(self, desk: CommandDesk) -> None:
        handled = desk.handle(b"\xd2\x84garbage")
        assert (handled.reply, handled.rejection, handled.security) == (
            None,
            CommandRejection.MALFORMED,
            False,
        )
        assert desk.security_events == 0

    @pytest.mark.parametrize(
        ("message", "reason", "op"),
        [
            (command(hub="hub-0002"), "wrong_hub", "sync_now"),
            (command(iat=NOW - 4000, exp=NOW - 400), "expired", "sync_now"),
            (command("reboot"), "unknown_op", ""),
            (command("announce", {"dictionaries": [0]}), "bad_args", "announce"),
        ],
    )
    def test_verified_rejections_are_answered(
        self, desk: CommandDesk, message: bytes, reason: str, op: str
    ) -> None:
        handled = desk.handle(message)
        assert reply_of(handled.reply) == {
            "v": 1,
            "hub": HUB,
            "nonce": NONCE,
            "op": op,
            "ok": False,
            "error": reason,
        }
        assert handled.security is CommandRejection(reason).security

    def test_rejected_nonce_is_not_remembered(self, desk: CommandDesk) -> None:
        """Only an accepted command's nonce is remembered (refusing a bad one changes nothing)."""
        assert desk.handle(command("reboot")).rejection is CommandRejection.UNKNOWN_OP
        assert desk.handle(command("sync_now")).ok

    def test_full_memory_refuses_new_commands_until_one_expires(
        self, tmp_path: Path, config_file: Path, clock: FakeWallClock
    ) -> None:
        desk = make_desk(tmp_path, config_file, clock, max_nonces=2)
        assert desk.handle(command(nonce=b"a" * 16, exp=NOW + 100)).ok
        assert desk.handle(command(nonce=b"b" * 16, exp=NOW + 200)).ok
        full = desk.handle(command(nonce=b"c" * 16, exp=NOW + 300))
        assert (full.rejection, full.security, reply_of(full.reply)["error"]) == (
            CommandRejection.REPLAY_MEMORY_FULL,
            False,
            "replay_memory_full",
        )
        # Nothing was forgotten to make room: both are still refused as replays.
        assert desk.handle(command(nonce=b"a" * 16, exp=NOW + 100)).rejection is (
            CommandRejection.REPLAYED
        )
        clock.now = NOW + 101  # the first expires: room for one
        assert desk.handle(command(nonce=b"c" * 16, exp=NOW + 300)).ok
        assert desk.handle(command(nonce=b"d" * 16, exp=NOW + 300)).rejection is (
            CommandRejection.REPLAY_MEMORY_FULL
        )

    def test_nonce_file_unwritable_runs_nothing(
        self, tmp_path: Path, config_file: Path, clock: FakeWallClock
    ) -> None:
        desk = make_desk(tmp_path, config_file, clock)
        desk._nonces.path = tmp_path / "gone" / "command_nonces"  # its directory is missing
        before = config_file.read_text()
        handled = desk.handle(command("set_config", {"key": "mqtt.keepalive_s", "value": 600}))
        assert (handled.ok, reply_of(handled.reply)["error"]) == (False, "storage")
        assert config_file.read_text() == before
        assert NONCE not in desk._nonces.memory

    def test_no_argument_value_in_any_log_line(self, desk: CommandDesk) -> None:
        with structlog.testing.capture_logs() as logs:
            desk.handle(command("set_config", {"key": "mqtt.keepalive_s", "value": 4321}))
            desk.handle(
                command("set_config", {"key": "mqtt.keepalive_s", "value": 98765}, nonce=b"n" * 16)
            )
            desk.handle(
                command("install_certificate", {"cert": b"\xde\xad\xbe\xef"}, nonce=b"m" * 16)
            )
        text = repr(logs)
        assert ("4321" not in text, "98765" not in text, "deadbeef" not in text) == (
            True,
            True,
            True,
        )
        assert [e["event"] for e in logs] == [
            "command_accepted",
            "command_accepted",
            "command_failed",
            "command_accepted",
            "command_failed",
        ]


class TestSetConfig:
    def test_written_keeping_comments_and_reloaded_by_the_loader(
        self, desk: CommandDesk, config_file: Path
    ) -> None:
        before = config_file.read_text()
        handled = desk.handle(command("set_config", {"key": "ble.cycle_interval_s", "value": 45}))
        assert reply_of(handled.reply) == {
            "v": 1,
            "hub": HUB,
            "nonce": NONCE,
            "op": "set_config",
            "ok": True,
            "result": {"key": "ble.cycle_interval_s", "restart_required": True},
        }
        after = config_file.read_text()
        assert config.load(config_file).ble.cycle_interval_s == 45.0
        comments = [line.split("#", 1)[1] for line in after.splitlines() if "#" in line]
        assert comments == [line.split("#", 1)[1] for line in before.splitlines() if "#" in line]
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o640
        assert [a for a in after.splitlines() if a not in before.splitlines()] == [
            "cycle_interval_s = 45          # 0.5-3600 s: a device is not connected again this"
            " soon after a session"
        ]

    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("mqtt.keepalive_s", 900, 900),
            ("ble.max_connections", 4, 4),
            ("ble.set_device_clock", False, False),
            ("ble.clock_set_threshold_s", 2.5, 2.5),
        ],
    )
    def test_each_key(
        self, desk: CommandDesk, config_file: Path, key: str, value: Any, expected: Any
    ) -> None:
        assert desk.handle(command("set_config", {"key": key, "value": value})).ok
        section, name = key.split(".")
        loaded = getattr(getattr(config.load(config_file), section), name)
        assert (type(loaded), loaded) == (type(expected), expected)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("mqtt.keepalive_s", 0),  # below the range
            ("mqtt.keepalive_s", 65536),
            ("mqtt.keepalive_s", 60.0),  # a float for an integer key
            ("mqtt.keepalive_s", True),
            ("ble.max_connections", 5),
            ("ble.cycle_interval_s", "30"),
            ("ble.cycle_interval_s", float("nan")),
            ("ble.clock_set_threshold_s", float("inf")),
            ("ble.set_device_clock", 1),
        ],
    )
    def test_value_refused_as_the_loader_would(
        self, desk: CommandDesk, config_file: Path, key: str, value: Any
    ) -> None:
        before = config_file.read_bytes()
        handled = desk.handle(command("set_config", {"key": key, "value": value}))
        assert (handled.ok, reply_of(handled.reply)["error"]) == (False, "bad_args")
        assert config_file.read_bytes() == before

    def test_section_absent(self, tmp_path: Path, clock: FakeWallClock) -> None:
        """A file without [ble] gets the table (and still loads)."""
        text = EXAMPLE.read_text()
        start, end = text.index("[ble]"), text.index("[[devices]]")
        path = tmp_path / "small.toml"
        path.write_text(text[:start] + text[end:])
        desk = make_desk(tmp_path, path, clock)
        assert desk.handle(command("set_config", {"key": "ble.max_connections", "value": 3})).ok
        assert config.load(path).ble.max_connections == 3
        assert tomllib.loads(path.read_text())["ble"] == {"max_connections": 3}

    def test_file_invalid_as_it_is(self, desk: CommandDesk, config_file: Path) -> None:
        config_file.write_text(config_file.read_text().replace('id = "hub-0001"', 'id = "HUB"'))
        before = config_file.read_bytes()
        handled = desk.handle(command("set_config", {"key": "mqtt.keepalive_s", "value": 600}))
        assert (handled.ok, reply_of(handled.reply)["error"]) == (False, "config")
        assert config_file.read_bytes() == before


class TestFromConfig:
    def test_the_configured_hub(
        self, tmp_path: Path, config_file: Path, dev_pki: DevPki, clock: FakeWallClock
    ) -> None:
        """[platform] cert_file names the key; the nonces live in hub.state_dir; set_config
        edits the file the configuration came from."""
        text = config_file.read_text()
        text = text.replace('state_dir = "/var/lib/homehub"', f'state_dir = "{tmp_path}"')
        text = text.replace(
            '# cert_file = "/etc/homehub/tls/platform.pem"',
            f'cert_file = "{dev_pki.platform_cert}"',
        )
        config_file.write_text(text)
        cfg = config.load(config_file)
        desk = CommandDesk.from_config(cfg, Signer.from_key(HUB_KEY), clock=clock)
        assert desk is not None
        signer = PlatformSigner.from_pem_file(dev_pki.platform_key)
        handled = desk.handle(
            signer.command(
                cfg.hub.id,
                "set_config",
                {"key": "mqtt.keepalive_s", "value": 900},
                iat=NOW,
                exp=NOW + 60,
            )
        )
        assert (handled.ok, config.load(config_file).mqtt.keepalive_s) == (True, 900)
        assert (tmp_path / command_nonces.FILE_NAME).exists()
        assert desk.handle(command()).rejection is CommandRejection.FORGED  # the test key

    def test_client_ca_file_checks_installed_certificates(
        self, tmp_path: Path, config_file: Path, dev_pki: DevPki, foreign_pki: DevPki
    ) -> None:
        """[platform] client_ca_file: an installed certificate must be issued by that CA;
        a file that is not a CA's certificate is refused at start, naming it."""
        text = config_file.read_text()
        text = text.replace('state_dir = "/var/lib/homehub"', f'state_dir = "{tmp_path}"')
        text = text.replace(
            '# cert_file = "/etc/homehub/tls/platform.pem"',
            f'cert_file = "{dev_pki.platform_cert}"',
        )
        text = text.replace(
            '# client_ca_file = "/etc/homehub/tls/client-ca.pem"',
            f'client_ca_file = "{dev_pki.ca_cert}"',
        )
        config_file.write_text(text)
        cfg = config.load(config_file)
        assert cfg.platform.client_ca_file == dev_pki.ca_cert
        desk = CommandDesk.from_config(cfg, Signer.from_key(HUB_KEY))
        assert desk is not None
        assert desk._client_ca is not None
        assert (
            desk._client_ca.subject
            == x509.load_pem_x509_certificate(dev_pki.ca_cert.read_bytes()).subject
        )
        config_file.write_text(text.replace(str(dev_pki.ca_cert), str(foreign_pki.hub_cert)))
        with pytest.raises(KeyMaterialError) as refused:
            CommandDesk.from_config(config.load(config_file), Signer.from_key(HUB_KEY))
        assert refused.value.what == "client CA certificate"
        assert refused.value.reason.endswith("not a CA (basicConstraints ca=false)")

    def test_no_platform_certificate_no_commands(self, config_file: Path) -> None:
        cfg = config.load(config_file)
        assert cfg.platform.cert_file is None
        assert CommandDesk.from_config(cfg, Signer.from_key(HUB_KEY)) is None


class TestSecurityEvent:
    def test_forged(self, desk: CommandDesk) -> None:
        handled = desk.handle(command(signer=IMPOSTOR))
        assert handled.security_event == SecurityEvent(
            source="command", check="forged", detail="kid is not the platform key's"
        )

    def test_not_for_a_malformed_or_unknown_command(self, desk: CommandDesk) -> None:
        assert desk.handle(b"").security_event is None
        assert desk.handle(command("reboot")).security_event is None
