"""Commands from the platform: verified, parsed into typed commands, refused with a reason,
answered with a signed reply (docs/platform-protocol.md, Commands).

The sans-I/O core is :meth:`Command.from_bytes`: the bytes of one MQTT message on
``homehub/v1/<hub>/commands`` in, a :class:`Command` out, or a
:class:`~agent.errors.CommandRejectedError` whose ``reason`` says why
(:class:`~agent.errors.CommandRejection`). The checks, in order:

1. the message is a COSE_Sign1 of content type :data:`COMMAND_CONTENT_TYPE` that verifies
   with the platform key (:func:`agent.cose.verify1`); when it does not, a message whose
   kid is not the platform key's, or whose signature does not verify, is ``forged``, and
   anything else (not a COSE_Sign1, or signed by the platform but outside the envelope
   rules) ``malformed``;
2. the payload is one CBOR map decoded strictly (:func:`agent.cose.strict_cbor`: no tags, no
   duplicate keys, no indefinite lengths, no trailing bytes, bounded nesting, deterministic
   encoding) holding exactly ``v`` (1), ``hub``,
   ``nonce`` (16 bytes), ``iat``, ``exp`` (uint, ``0 <= exp - iat <= 3600``), ``op`` and
   ``args`` (a map): else ``malformed``;
3. ``hub`` is this hub (``wrong_hub``); ``iat - 1200 <= now <= exp`` by the injected clock
   (``expired``); ``op`` is known (``unknown_op``); ``args`` are exactly the op's
   (``bad_args``; a ``set_config`` key must be on :data:`SETTABLE_KEYS`).

Replay is the nonce memory's (:mod:`agent.command_nonces`), checked after these: only a
command that passed them is remembered.

:class:`CommandDesk` ties the core to what it drives, for the daemon: verify, admit the nonce
(durably), carry out what is done on files (``set_config`` through the configuration loader,
the certificate slots of :mod:`agent.cert_rotation`), log the audit line, and build the signed
reply. What the daemon's tasks do (send now, publish the status, take the dictionaries, switch
certificates) it does itself with the returned :class:`Handled`.

Audit lines: ``command_accepted`` (``op``, ``nonce``), ``command_rejected`` (``reason``,
``detail``, ``op`` when known, ``nonce`` when the signature verified), ``command_failed``
(``op``, ``error``): never an argument's value.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Final, NoReturn, Protocol

import cbor2
import structlog
import tomlkit
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tomlkit.items import InlineTable, Table

from agent import cert_rotation, config, cose
from agent.cert_rotation import CertificateSlots
from agent.command_nonces import MAX_LIFETIME_S, MAX_SKEW_S, NONCE_BYTES, Admission, NonceFile
from agent.config_edit import write_atomically
from agent.errors import (
    CertificateRefusedError,
    CommandRejectedError,
    CommandRejection,
    ConfigError,
    IntegrityError,
    KeyMaterialError,
    StorageError,
)
from agent.security import SecurityEvent, load_ca_certificate, load_platform_key

log = structlog.get_logger(__name__)

COMMAND_CONTENT_TYPE: Final = "application/vnd.homehub.command+cbor"
REPLY_CONTENT_TYPE: Final = "application/vnd.homehub.reply+cbor"
PROTOCOL_VERSION: Final = 1

MAX_DICTIONARIES: Final = 64
"""Dictionary ids one ``announce`` names: a few per device kind and version is the use."""
MAX_DICTIONARY_ID: Final = 2**32 - 1
"""A zstd dictionary id is 32 bits (RFC 8878 §5); 0 means "no dictionary"."""
MAX_TEXT_CHARS: Final = 256
"""A ``set_config`` text value: no settable key needs more."""
MAX_OP_CHARS: Final = 64
_UINT64_LIMIT: Final = 2**64

SETTABLE_KEYS: Final = frozenset(
    {
        "mqtt.keepalive_s",
        "ble.cycle_interval_s",
        "ble.max_connections",
        "ble.set_device_clock",
        "ble.clock_set_threshold_s",
    }
)
"""The keys ``set_config`` may set: tuning that changes neither who the hub is, nor whom it
trusts or talks to, nor whose readings it sends (never ``hub.*``, ``patient.*``, a path, a
key, a host, a certificate)."""

_FIELDS: Final = frozenset({"v", "hub", "nonce", "iat", "exp", "op", "args"})
_PAYLOAD_MAX_DEPTH: Final = 4
"""map -> args map -> dictionaries array -> (ids). Nothing deeper is a command."""
_ENVELOPE_MAX_DEPTH: Final = 3

_KNOWN_SEMANTIC_TAGS: Final = cose._KNOWN_SEMANTIC_TAGS
"""The tags cbor2 6.3 turns into objects by itself: :mod:`agent.cose`'s one list, which
:func:`agent.cose.strict_loads` refuses."""


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


class Op(StrEnum):
    """The ops of docs/platform-protocol.md."""

    SYNC_NOW = "sync_now"
    REPORT_STATUS = "report_status"
    SET_CONFIG = "set_config"
    ANNOUNCE = "announce"
    ROTATE_CERTIFICATE = "rotate_certificate"
    INSTALL_CERTIFICATE = "install_certificate"


@dataclass(frozen=True, slots=True)
class SyncNow:
    """Send the outbox now."""

    op: ClassVar[Op] = Op.SYNC_NOW


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """Publish the status message now."""

    op: ClassVar[Op] = Op.REPORT_STATUS


@dataclass(frozen=True, slots=True)
class SetConfig:
    """Set ``key`` (one of :data:`SETTABLE_KEYS`) to ``value`` in the configuration file."""

    op: ClassVar[Op] = Op.SET_CONFIG
    key: str
    value: int | float | bool | str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Announce:
    """The platform holds these zstd dictionaries (ids, ascending, each once)."""

    op: ClassVar[Op] = Op.ANNOUNCE
    dictionary_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RotateCertificate:
    """Make a new key and answer with its CSR."""

    op: ClassVar[Op] = Op.ROTATE_CERTIFICATE


@dataclass(frozen=True, slots=True)
class InstallCertificate:
    """Install the certificate (DER) for the key of the last CSR."""

    op: ClassVar[Op] = Op.INSTALL_CERTIFICATE
    cert_der: bytes = field(repr=False)


Action = SyncNow | ReportStatus | SetConfig | Announce | RotateCertificate | InstallCertificate


@dataclass(frozen=True, slots=True)
class Command:
    """A command that verified and passed every check but replay (module docstring)."""

    nonce: bytes
    issued_at_s: int
    expires_at_s: int
    action: Action

    @property
    def op(self) -> Op:
        return self.action.op

    @classmethod
    def from_bytes(
        cls,
        message: bytes,
        *,
        hub_id: str,
        platform_key: ec.EllipticCurvePublicKey,
        now_s: int,
    ) -> Command:
        """Verify and parse one command message (module docstring).

        Raises:
            CommandRejectedError: with ``reason``, ``detail``, the ``op`` when known and the
                ``nonce`` when the signature verified and the nonce was readable.
            KeyMaterialError: ``platform_key`` is not a P-256 key (our configuration's bug).
        """
        try:
            signed = cose.verify1(message, platform_key, expected_content_type=COMMAND_CONTENT_TYPE)
        except IntegrityError:
            reason, detail = _unverified(message, platform_key)
            raise CommandRejectedError(reason, detail) from None
        try:
            body = cose.strict_cbor(signed.payload, "payload", max_depth=_PAYLOAD_MAX_DEPTH)
        except IntegrityError:
            raise CommandRejectedError(
                CommandRejection.MALFORMED, "payload is not strict, deterministic CBOR"
            ) from None
        if not isinstance(body, dict):
            raise CommandRejectedError(CommandRejection.MALFORMED, "payload is not a map")
        return _parse_body(body, hub_id, now_s)


def _parse_body(body: dict[Any, Any], hub_id: str, now_s: int) -> Command:
    nonce = body.get("nonce")
    nonce = nonce if isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES else None
    op_text = body.get("op")
    known = Op(op_text) if isinstance(op_text, str) and op_text in _OPS else None

    def reject(reason: CommandRejection, detail: str) -> NoReturn:
        raise CommandRejectedError(reason, detail, op=known.value if known else None, nonce=nonce)

    if not all(isinstance(k, str) for k in body) or set(body) != _FIELDS:
        reject(
            CommandRejection.MALFORMED, "fields are not exactly v, hub, nonce, iat, exp, op, args"
        )
    version, hub, iat, exp, args = body["v"], body["hub"], body["iat"], body["exp"], body["args"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        reject(CommandRejection.MALFORMED, "v is not 1")
    if not isinstance(hub, str):
        reject(CommandRejection.MALFORMED, "hub is not a text string")
    if nonce is None:
        reject(CommandRejection.MALFORMED, f"nonce is not a {NONCE_BYTES}-byte string")
    if not _is_uint(iat) or not _is_uint(exp):
        reject(CommandRejection.MALFORMED, "iat or exp is not a uint")
    if not isinstance(op_text, str) or len(op_text) > MAX_OP_CHARS:
        reject(CommandRejection.MALFORMED, "op is not a short text string")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        reject(CommandRejection.MALFORMED, "args is not a map of text keys")
    if not 0 <= exp - iat <= MAX_LIFETIME_S:
        reject(CommandRejection.MALFORMED, f"exp - iat is not within 0..{MAX_LIFETIME_S} s")
    if hub != hub_id:
        reject(CommandRejection.WRONG_HUB, "hub is another hub's id")
    if not iat - MAX_SKEW_S <= now_s <= exp:
        reject(CommandRejection.EXPIRED, f"now is outside iat - {MAX_SKEW_S} s .. exp")
    if known is None:
        reject(CommandRejection.UNKNOWN_OP, "op is not one the hub knows")
    try:
        action = _ARGS[known](args)
    except _BadArgsError as exc:
        reject(CommandRejection.BAD_ARGS, str(exc))
    return Command(nonce=nonce, issued_at_s=iat, expires_at_s=exp, action=action)


_OPS: Final = frozenset(op.value for op in Op)


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value < _UINT64_LIMIT


class _BadArgsError(Exception):
    """An op's arguments are wrong; the text is fixed (no value)."""


def _exactly(args: Mapping[str, Any], *names: str) -> None:
    if set(args) != set(names):
        expected = ", ".join(names) if names else "none"
        raise _BadArgsError(f"arguments are not exactly: {expected}")


def _no_args(action: Callable[[], Action], args: Mapping[str, Any]) -> Action:
    _exactly(args)
    return action()


def _set_config_args(args: Mapping[str, Any]) -> Action:
    _exactly(args, "key", "value")
    key, value = args["key"], args["value"]
    if not isinstance(key, str) or key not in SETTABLE_KEYS:
        raise _BadArgsError("key is not one set_config may set")
    if not isinstance(value, bool | int | float | str):
        raise _BadArgsError("value is not an int, float, bool or text")
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise _BadArgsError(f"value is longer than {MAX_TEXT_CHARS} characters")
    return SetConfig(key=key, value=value)


def _announce_args(args: Mapping[str, Any]) -> Action:
    _exactly(args, "dictionaries")
    ids = args["dictionaries"]
    if not isinstance(ids, list) or len(ids) > MAX_DICTIONARIES:
        raise _BadArgsError(f"dictionaries is not an array of at most {MAX_DICTIONARIES}")
    if not all(type(i) is int and 1 <= i <= MAX_DICTIONARY_ID for i in ids):
        raise _BadArgsError(f"a dictionary id is not a uint in 1..{MAX_DICTIONARY_ID}")
    return Announce(dictionary_ids=tuple(sorted(set(ids))))


def _install_args(args: Mapping[str, Any]) -> Action:
    _exactly(args, "cert")
    cert = args["cert"]
    if not isinstance(cert, bytes) or not 0 < len(cert) <= cert_rotation.MAX_CERT_BYTES:
        raise _BadArgsError(f"cert is not a byte string of 1..{cert_rotation.MAX_CERT_BYTES}")
    return InstallCertificate(cert_der=cert)


_ARGS: Final[Mapping[Op, Callable[[Mapping[str, Any]], Action]]] = {
    Op.SYNC_NOW: functools.partial(_no_args, SyncNow),
    Op.REPORT_STATUS: functools.partial(_no_args, ReportStatus),
    Op.SET_CONFIG: _set_config_args,
    Op.ANNOUNCE: _announce_args,
    Op.ROTATE_CERTIFICATE: functools.partial(_no_args, RotateCertificate),
    Op.INSTALL_CERTIFICATE: _install_args,
}


# ---------------------------------------------------------------------------
# A message that did not verify: forged or malformed
# ---------------------------------------------------------------------------


def _unverified(
    message: bytes, platform_key: ec.EllipticCurvePublicKey
) -> tuple[CommandRejection, str]:
    """Why :func:`agent.cose.verify1` refused ``message``: ``forged`` when it names another
    key or its signature does not verify with the platform key, else ``malformed``."""
    if len(message) > cose.MAX_MESSAGE_BYTES or message[:1] != b"\xd2":
        return CommandRejection.MALFORMED, "not a tagged COSE_Sign1"
    try:
        body = _strict_loads(message[1:], _ENVELOPE_MAX_DEPTH)
        if not (isinstance(body, list) and len(body) == 4):
            raise _MalformedError("not a 4-element array")
        protected, _unprotected, payload, signature = body
        if not isinstance(protected, bytes) or not isinstance(payload, bytes):
            raise _MalformedError("protected header or payload is not a byte string")
        if not isinstance(signature, bytes) or len(signature) != cose.SIGNATURE_BYTES:
            raise _MalformedError("signature is not 64 bytes")
        header = _strict_loads(protected, 2)
        kid = header.get(cose.HEADER_KID) if isinstance(header, dict) else None
        if not isinstance(kid, bytes):
            raise _MalformedError("no kid")
    except _MalformedError:
        return CommandRejection.MALFORMED, "not a COSE_Sign1"
    if kid != cose.key_id(platform_key):
        return CommandRejection.FORGED, "kid is not the platform key's"
    to_be_signed = cbor2.dumps([cose.SIG_CONTEXT, protected, b"", payload], canonical=True)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        platform_key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return CommandRejection.FORGED, "signature does not verify"
    return CommandRejection.MALFORMED, "signed by the platform key, but not a command envelope"


# ---------------------------------------------------------------------------
# Strict CBOR without the deterministic-encoding rule: to read an envelope that did not verify
# far enough to tell forged from malformed (agent.cose.strict_cbor decodes the payload)
# ---------------------------------------------------------------------------


class _MalformedError(Exception):
    """CBOR the contract refuses; the text is fixed."""


def _strict_loads(data: bytes, max_depth: int) -> object:
    """Exactly one CBOR item without tags, duplicate keys or indefinite lengths
    (:func:`agent.cose.strict_loads`)."""
    try:
        return cose.strict_loads(data, "command", max_depth)
    except IntegrityError:
        raise _MalformedError("not valid CBOR of the contract") from None


# ---------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------


class ReplySigner(Protocol):
    """What a reply needs of :class:`agent.ingest.Signer`: the ES256 operation and the kid."""

    @property
    def sign(self) -> cose.Es256Sign: ...

    @property
    def kid(self) -> bytes: ...


def build_reply(
    *,
    hub_id: str,
    nonce: bytes,
    op: str,
    signer: ReplySigner,
    error: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> bytes:
    """The signed reply (COSE_Sign1, :data:`REPLY_CONTENT_TYPE`) to the command ``nonce``:
    ``ok`` unless ``error`` (a short code) is given; ``result`` when given."""
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "hub": hub_id,
        "nonce": bytes(nonce),
        "op": op,
        "ok": error is None,
    }
    if error is not None:
        body["error"] = error
    if result is not None:
        body["result"] = dict(result)
    payload = cbor2.dumps(body, canonical=True)
    return cose.sign1_with(payload, signer.sign, signer.kid, REPLY_CONTENT_TYPE)


# ---------------------------------------------------------------------------
# set_config
# ---------------------------------------------------------------------------


def apply_set_config(config_path: Path, change: SetConfig) -> config.Config:
    """Write ``change`` into the configuration file, keeping its comments; returns the
    configuration as the daemon will load it at its next start.

    The file must load as it is; the edited text must load through the loader's validation
    (:func:`agent.config.from_mapping`, what :func:`agent.config.load` runs on the parsed
    file) and stay within :data:`agent.config.MAX_CONFIG_BYTES`; only then is it written,
    atomically (:func:`agent.config_edit.write_atomically`).

    Raises:
        CommandRejectedError: ``bad_args``: the value is refused by the schema (nothing
            written).
        ConfigError: the file does not load as it is, or cannot be written.
    """
    if change.key not in SETTABLE_KEYS:  # from_bytes refuses these; a direct caller too
        raise CommandRejectedError(
            CommandRejection.BAD_ARGS, "key is not one set_config may set", op=Op.SET_CONFIG
        )
    config.load(config_path)
    section, name = change.key.split(".")
    doc = tomlkit.parse(config_path.read_text(encoding="utf-8"))
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc.add(section, table)
    if not isinstance(table, Table | InlineTable):
        raise ConfigError(str(config_path), section, "is not a table; edit it by hand")
    table[name] = change.value
    text = tomlkit.dumps(doc)
    try:
        updated = config.from_mapping(tomllib.loads(text), config_path)
    except ConfigError as exc:
        raise CommandRejectedError(
            CommandRejection.BAD_ARGS,
            f"value refused by the configuration schema ({exc.key})",
            op=Op.SET_CONFIG,
        ) from None
    data = text.encode("utf-8")
    if len(data) > config.MAX_CONFIG_BYTES:
        raise ConfigError(str(config_path), None, "would grow past the loader's size bound")
    write_atomically(config_path, data)
    return updated


# ---------------------------------------------------------------------------
# The desk: what the daemon calls
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handled:
    """What :meth:`CommandDesk.handle` did with one message.

    ``command``: the command, when it was accepted (its nonce now remembered); ``ok``: it
    was carried out, or, for the daemon's ops (sync_now, report_status, announce,
    and switching over after install_certificate), is the daemon's to carry out now.
    ``rejection``: why it was refused, when it was. ``security_event``: the ``security``
    event to report (:func:`agent.security.report_security`, on the event loop: the daemon's
    sink is not thread-safe). ``reply``: the signed reply to publish on ``replies``, or
    ``None`` (a message that did not verify gets none).
    """

    command: Command | None
    ok: bool
    rejection: CommandRejection | None
    reply: bytes | None = field(repr=False)
    security_event: SecurityEvent | None = None

    @property
    def security(self) -> bool:
        return self.security_event is not None


class CommandDesk:
    """Verify, remember, carry out and answer the platform's commands (module docstring).

    Synchronous, with file I/O and an fsync per accepted command, and signing with the hub's
    key: call :meth:`handle` where the daemon runs such calls (the storage thread, which also
    owns a PKCS#11 signing key).

    Args:
        hub_id: this hub.
        platform_key: the platform's public key (:func:`agent.security.load_platform_key`).
        signer: the hub's signer (:class:`agent.ingest.Signer`).
        nonces: the durable nonce memory.
        clock: Unix time in seconds (the wall clock; tests inject one).
        config_path: the configuration file ``set_config`` edits.
        slots: the client certificate's files (:class:`agent.cert_rotation.CertificateSlots`).
        client_ca: when given, an installed certificate must be issued by it and valid now.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        platform_key: ec.EllipticCurvePublicKey,
        signer: ReplySigner,
        nonces: NonceFile,
        clock: Callable[[], float],
        config_path: Path,
        slots: CertificateSlots,
        client_ca: x509.Certificate | None = None,
    ) -> None:
        self.hub_id = hub_id
        self._platform_key = platform_key
        self._signer = signer
        self._nonces = nonces
        self._clock = clock
        self._config_path = config_path
        self._slots = slots
        self._client_ca = client_ca
        self.rejections: collections.Counter[CommandRejection] = collections.Counter()
        """Rejections by reason since start; the security ones are ``security`` events."""

    @classmethod
    def from_config(
        cls,
        cfg: config.Config,
        signer: ReplySigner,
        *,
        clock: Callable[[], float] = time.time,
        client_ca: x509.Certificate | None = None,
    ) -> CommandDesk | None:
        """The desk of the configured hub, or ``None`` when no ``[platform] cert_file`` is
        set (no command can verify then). Reads the platform certificate and the nonce file
        (``<hub.state_dir>/command_nonces``, which must be writable for a command to run);
        ``set_config`` edits ``cfg.source``; rotation uses ``mqtt.cert_file``/``key_file``
        and, to check an installed certificate's issuer, ``platform.client_ca_file`` (unless
        ``client_ca`` is given).

        Raises:
            KeyMaterialError: the platform certificate is unreadable or not a P-256 key's, or
                the client CA file is unreadable or not a CA's certificate.
        """
        if cfg.platform.cert_file is None:
            return None
        if client_ca is None and cfg.platform.client_ca_file is not None:
            client_ca = load_ca_certificate(cfg.platform.client_ca_file)
        return cls(
            hub_id=cfg.hub.id,
            platform_key=load_platform_key(cfg.platform.cert_file),
            signer=signer,
            nonces=NonceFile.in_state_dir(cfg.hub.state_dir, clock),
            clock=clock,
            config_path=cfg.source,
            slots=CertificateSlots(cfg.mqtt.cert_file, cfg.mqtt.key_file),
            client_ca=client_ca,
        )

    @property
    def security_events(self) -> int:
        return sum(n for reason, n in self.rejections.items() if reason.security)

    def handle(self, message: bytes) -> Handled:
        """One message from ``commands``: the outcome, with the reply to publish.

        Never raises for what a message holds; a bug while carrying a command out is logged
        (``command_crashed``, with the traceback) and answered ``internal``.
        """
        try:
            command = Command.from_bytes(
                message,
                hub_id=self.hub_id,
                platform_key=self._platform_key,
                now_s=int(self._clock()),
            )
        except CommandRejectedError as exc:
            return self._rejected(exc)
        try:
            self._admit(command)
        except CommandRejectedError as exc:
            return self._rejected(exc)
        except StorageError as exc:
            log.error("command_failed", op=command.op.value, error="storage", reason=exc.reason)
            return self._answer(command, error="storage")
        log.info("command_accepted", op=command.op.value, nonce=command.nonce.hex())
        try:
            return self._carry_out(command)
        except Exception as exc:  # a bug must not end the daemon: logged with its traceback
            log.error(
                "command_crashed", op=command.op.value, error=type(exc).__name__, exc_info=exc
            )
            return self._answer(command, error="internal")

    def _admit(self, command: Command) -> None:
        admission = self._nonces.admit(
            command.nonce, issued_at_s=command.issued_at_s, expires_at_s=command.expires_at_s
        )
        if admission is Admission.REPLAYED:
            raise CommandRejectedError(
                CommandRejection.REPLAYED,
                "nonce accepted before",
                op=command.op.value,
                nonce=command.nonce,
            )
        if admission is Admission.FULL:
            raise CommandRejectedError(
                CommandRejection.REPLAY_MEMORY_FULL,
                "as many unexpired nonces remembered as the bound allows",
                op=command.op.value,
                nonce=command.nonce,
            )

    def _rejected(self, exc: CommandRejectedError) -> Handled:
        self.rejections[exc.reason] += 1
        log.warning(
            "command_rejected",
            reason=exc.reason.value,
            detail=exc.detail,
            op=exc.op,
            nonce=exc.nonce.hex() if exc.nonce is not None else None,
            security=exc.reason.security,
        )
        reply = None
        if exc.nonce is not None:
            reply = self._reply(exc.nonce, exc.op or "", error=exc.reason.value)
        event = None
        if exc.reason.security:
            event = SecurityEvent(source="command", check=exc.reason.value, detail=exc.detail)
        return Handled(None, False, exc.reason, reply, event)

    def _carry_out(self, command: Command) -> Handled:
        action = command.action
        result: dict[str, Any] | None = None
        try:
            if isinstance(action, SetConfig):
                apply_set_config(self._config_path, action)
                result = {"key": action.key, "restart_required": True}
            elif isinstance(action, RotateCertificate):
                result = {"csr": cert_rotation.begin_rotation(self._slots, self.hub_id)}
            elif isinstance(action, InstallCertificate):
                now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
                cert_rotation.install(
                    self._slots, action.cert_der, self.hub_id, ca=self._client_ca, now=now
                )
        except CommandRejectedError as exc:
            log.warning("command_failed", op=command.op.value, error=exc.reason.value)
            return self._answer(command, error=exc.reason.value)
        except CertificateRefusedError as exc:
            log.warning(
                "command_failed", op=command.op.value, error="certificate_refused", check=exc.check
            )
            return self._answer(command, error="certificate_refused", result={"check": exc.check})
        except ConfigError as exc:
            log.error("command_failed", op=command.op.value, error="config", reason=exc.reason)
            return self._answer(command, error="config")
        except KeyMaterialError as exc:
            log.error("command_failed", op=command.op.value, error="key_files", reason=exc.reason)
            return self._answer(command, error="key_files")
        return self._answer(command, result=result)

    def _answer(
        self,
        command: Command,
        *,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> Handled:
        reply = self._reply(command.nonce, command.op.value, error=error, result=result)
        return Handled(command, error is None, None, reply)

    def _reply(
        self,
        nonce: bytes,
        op: str,
        *,
        error: str | None = None,
        result: Mapping[str, Any] | None = None,
    ) -> bytes:
        return build_reply(
            hub_id=self.hub_id, nonce=nonce, op=op, signer=self._signer, error=error, result=result
        )


__all__ = [
    "COMMAND_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "SETTABLE_KEYS",
    "Action",
    "Announce",
    "Command",
    "CommandDesk",
    "Handled",
    "InstallCertificate",
    "Op",
    "ReplySigner",
    "ReportStatus",
    "RotateCertificate",
    "SetConfig",
    "SyncNow",
    "apply_set_config",
    "build_reply",
]
