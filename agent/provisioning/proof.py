"""Proving a provisioned hub against its platform: steps 8 (TLS handshake) and 9 (signed
check), over the hub's own uplink (:class:`agent.uplink.Uplink`: the same TLS settings,
profile, topics and client id as the daemon).

The connection uses the hub's client id, so the daemon must not run meanwhile (the runner
holds the hub's lock). Its session expires when it ends (Session Expiry Interval 0): a
confirmation that comes after the check gave up finds no session and is dropped by the
broker instead of reaching the daemon later. Messages the broker had queued for the hub are
taken by this connection: receipts are dropped (the daemon sends those readings again and
the platform receipts them again), commands other than the confirmation go unanswered (a
platform sends a command again when no reply comes).

Every wait is bounded: the handshake by ``connect_timeout_s`` (the uplink's own attempt
timeout is shorter), the confirmation by ``answer_timeout_s``; closing by the uplink's
DISCONNECT timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from agent.commands import build_reply
from agent.config import Config
from agent.errors import HubError, KeyMaterialError, UplinkError
from agent.ingest import Signer
from agent.provisioning.check import (
    CHECK_BYTES,
    CONFIRM_OP,
    Confirmation,
    ConfirmationError,
    Distrust,
    check_event,
    read_confirmation,
)
from agent.provisioning.steps import ProvisionFailedError, ProvisionRefusedError, Step
from agent.uplink import InboundMessage, Refusal, RefusalCause, Uplink, UplinkSettings

_log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S: Final = 20.0
"""The handshake and CONNACK, retried within this bound: a cellular link's first connection
takes a few seconds; the uplink's own attempt timeout is shorter."""
ANSWER_TIMEOUT_S: Final = 30.0
"""From the check's PUBACK to the platform's confirmation: a platform answers within a
second; 30 s covers a slow cellular round trip many times over."""
PUBACK_TIMEOUT_S: Final = 10.0
"""The broker's acknowledgement of the check or of the reply."""
RETRY_BACKOFF_MAX_S: Final = 1.0
"""Within the handshake's bound, a failed attempt is tried again after at most a second."""
ANSWERS_MAX: Final = 16
"""Commands held while the check waits; more are dropped (none of them is the answer the
check waits for unless the platform floods the hub)."""

REFUSAL_FIXES: Final = {
    RefusalCause.SERVER_CERTIFICATE: (
        "the broker's certificate was not accepted (not issued by the CA chain, expired, or"
        " for another host name)",
        "check [mqtt] host and the CA chain (--ca, pem.ca_chain): the chain must hold the CA"
        " that issued the broker's certificate",
    ),
    RefusalCause.TLS_HANDSHAKE: (
        "the broker refused the TLS handshake (the hub's certificate was not accepted)",
        "the broker must trust the CA that issued the hub's certificate; check step 4's"
        " certificate and the platform's CA",
    ),
    RefusalCause.CLOSED_BEFORE_CONNACK: (
        "the broker closed the connection before accepting it (the hub's certificate was not"
        " accepted)",
        "the broker must trust the CA that issued the hub's certificate; check step 4's"
        " certificate and the platform's CA",
    ),
    RefusalCause.CONNACK: (
        "the broker refused the connection (not authorized for this hub id)",
        "the platform must register the hub id (the certificate's CN) before it connects",
    ),
    RefusalCause.KEY_MATERIAL: (
        "the hub's CA chain, certificate or key file cannot be used",
        "run the provisioning steps 2 to 4 again",
    ),
}


@dataclass(frozen=True, slots=True)
class ProofReport:
    """What the two steps saw (for their lines)."""

    endpoint: str
    profile: str
    check_id: str
    """The check's first 4 bytes in hex: names it in the platform's logs."""
    round_trip_ms: int


async def prove(
    cfg: Config,
    signer: Signer,
    platform_key: ec.EllipticCurvePublicKey,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    answer_timeout_s: float = ANSWER_TIMEOUT_S,
    on_handshake: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> ProofReport:
    """Connect as the hub, publish a check signed by ``signer`` (the hub's signing key: its
    key file, or the provider's key in a PKCS#11 token), await the platform's signed
    confirmation and reply to it. Raises :class:`ProvisionFailedError` for step 8 or 9 with the fix.

    ``on_handshake(endpoint)`` is called once the broker accepted the connection (step 8's
    line, printed while step 9 waits). ``clock``: the wall clock judging the confirmation's
    time window (the edge a test may move).
    """
    settings = dataclasses.replace(
        UplinkSettings.from_config(cfg),
        first_connect_jitter_s=0.0,
        backoff_max_s=RETRY_BACKOFF_MAX_S,
        session_expiry_s=0,
    )
    endpoint = f"{settings.host}:{settings.port}"
    uplink = Uplink(settings)
    answers: asyncio.Queue[bytes] = asyncio.Queue(maxsize=ANSWERS_MAX)
    refused: asyncio.Future[Refusal] = asyncio.get_running_loop().create_future()

    async def take(message: InboundMessage) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            answers.put_nowait(message.payload)

    def refusal(seen: Refusal) -> None:
        if not refused.done():
            refused.set_result(seen)

    uplink.on_message("commands", take)
    uplink.on_refused(refusal)
    running = asyncio.create_task(uplink.run(), name="provision.uplink")
    try:
        await _handshake(uplink, running, refused, endpoint, connect_timeout_s)
        if on_handshake is not None:
            on_handshake(endpoint)
        check = os.urandom(CHECK_BYTES)
        started = time.monotonic()
        event = check_event(cfg.hub.id, int(clock()), check, signer.sign, signer.kid)
        await _published(uplink.publish_message("events", event), "the check")
        which = "signing certificate" if cfg.keys.provider == "pkcs11" else "certificate"
        confirmation = await _confirmation(
            answers, platform_key, cfg.hub.id, check, clock, answer_timeout_s, which
        )
        reply = build_reply(
            hub_id=cfg.hub.id, nonce=confirmation.nonce, op=CONFIRM_OP, signer=signer
        )
        await _published(uplink.publish_message("replies", reply), "the reply")
        took = round((time.monotonic() - started) * 1000)
        return ProofReport(endpoint, settings.profile.name, check[:4].hex(), took)
    finally:
        await uplink.close()
        try:
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                await running
        except (HubError, TimeoutError, ExceptionGroup) as exc:
            # The step's own result (or error) stands; how the uplink ended is logged only.
            _log.warning("provision_uplink_stop_failed", error=type(exc).__name__)


async def _handshake(
    uplink: Uplink,
    running: asyncio.Task[None],
    refused: asyncio.Future[Refusal],
    endpoint: str,
    timeout_s: float,
) -> None:
    connected = asyncio.ensure_future(
        uplink.wait_until(lambda s: s.connects >= 1 and s.subscribed >= 1)
    )
    waited: set[asyncio.Future[object]] = {connected, refused, running}  # type: ignore[arg-type]
    try:
        done, _ = await asyncio.wait(waited, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connected.cancel()
    if refused in done:
        reason, fix = REFUSAL_FIXES[refused.result().cause]
        raise ProvisionFailedError(Step.HANDSHAKE, f"{endpoint}: {reason}", fix)
    if running in done:
        exc = running.exception()
        what = exc.reason if isinstance(exc, KeyMaterialError) else type(exc).__name__
        raise ProvisionRefusedError(
            Step.HANDSHAKE,
            f"the hub's TLS files cannot be used ({what})",
            "run the provisioning steps 2 to 4 again",
        )
    if connected not in done:
        seen = uplink.stats.last_failure or "no answer"
        raise ProvisionFailedError(
            Step.HANDSHAKE,
            f"the broker at {endpoint} was not reached within {timeout_s:g} s ({seen})",
            "check [mqtt] host and port (--host, --port, endpoint in the bundle), the hub's"
            " network link, and that the platform's broker is up; then run"
            " `homehub provision check`",
        )


async def _published(publish: asyncio.Future[None], what: str) -> None:
    try:
        async with asyncio.timeout(PUBACK_TIMEOUT_S):
            await publish
    except (UplinkError, TimeoutError) as exc:
        detail = exc.reason if isinstance(exc, UplinkError) else "no PUBACK"
        raise ProvisionFailedError(
            Step.CHECK,
            f"the broker did not take {what} ({detail})",
            "the broker's ACL must let the hub publish its events and replies; run"
            " `homehub provision check` again",
        ) from None


async def _confirmation(
    answers: asyncio.Queue[bytes],
    platform_key: ec.EllipticCurvePublicKey,
    hub_id: str,
    check: bytes,
    clock: Callable[[], float],
    timeout_s: float,
    which: str,
) -> Confirmation:
    """The platform's confirmation of ``check``; ``which`` names the certificate the platform
    verifies the check with (``"signing certificate"`` on a PKCS#11 hub) in the fix."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await answers.get()
                try:
                    found = read_confirmation(
                        message, platform_key, hub_id=hub_id, check=check, now=clock()
                    )
                except ConfirmationError as exc:
                    raise ProvisionFailedError(Step.CHECK, *_distrust_fix(exc)) from None
                if found is not None:
                    return found
    except TimeoutError:
        raise ProvisionFailedError(
            Step.CHECK,
            f"the platform did not confirm the check within {timeout_s:g} s",
            f"the platform must know this hub's {which} (register it with the platform,"
            " as issued at step 4) and answer provisioning checks; then run"
            " `homehub provision check`",
        ) from None


def _distrust_fix(exc: ConfirmationError) -> tuple[str, str]:
    if exc.reason is Distrust.FORGED:
        return (
            "the platform's confirmation does not verify with [platform] cert_file",
            "give the platform's signing certificate (--platform-cert, or"
            " pem.platform_certificate in the bundle)",
        )
    if exc.reason is Distrust.EXPIRED:
        return (
            "the platform's confirmation is outside its time window by the hub's clock",
            "set the hub's clock (date -u; NTP) and run `homehub provision check` again",
        )
    if exc.reason is Distrust.WRONG_HUB:
        return ("the platform's confirmation names another hub", "check the hub id at step 1")
    return (f"the platform's confirmation is malformed ({exc.detail})", "report it to the platform")


__all__ = ["ANSWER_TIMEOUT_S", "CONNECT_TIMEOUT_S", "ProofReport", "prove"]
