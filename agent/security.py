"""Security events about the platform side, and the platform's public key.

A ``security`` event is what the platform's security monitoring (and a technician reading the
journal) looks for: something that should not happen unless someone is attacking the hub or
the platform is broken. The daemon counts them (``Hub.security_events``, ``security_noticed``).

Anything that refuses a platform message (a receipt today, a command next) reports it with
:func:`report_security`: one ``security`` log line (fields, never a value from the message)
and a call of the sink the daemon passes in, which counts it::

    from agent.security import SecurityEvent, report_security

    report_security(SecurityEvent(source="receipt", check="forged", detail="..."), sink)

:func:`load_platform_key` reads ``[platform] cert_file`` (the one I/O here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import KeyMaterialError

log = structlog.get_logger(__name__)

MAX_CERT_FILE_BYTES: Final = 64 * 1024
"""A PEM certificate is about 600 bytes; anything near this bound is not one."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One security event.

    Attributes:
        source: what raised it (``"receipt"``, ``"command"``).
        check: which check failed, a short code (a rejection reason's value).
        detail: a fixed text (never a value from the message, never key material).
    """

    source: str
    check: str
    detail: str


SecuritySink = Callable[[SecurityEvent], None]
"""Where security events go besides the log: the daemon counts them."""


def report_security(event: SecurityEvent, sink: SecuritySink | None) -> None:
    """Log ``event`` as a ``security`` line and hand it to ``sink``."""
    log.error("security", source=event.source, check=event.check, detail=event.detail)
    if sink is not None:
        sink(event)


def load_ca_certificate(path: Path, what: str = "client CA certificate") -> x509.Certificate:
    """A PEM CA certificate (``[platform] client_ca_file``), read bounded.

    Raises :class:`KeyMaterialError` for a missing, unreadable or oversized file, or one that
    is not a PEM certificate of a CA (basicConstraints ca=true).
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CERT_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyMaterialError(what, f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CERT_FILE_BYTES:
        raise KeyMaterialError(what, f"{path}: larger than {MAX_CERT_FILE_BYTES} bytes")
    try:
        cert = x509.load_pem_x509_certificate(data)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except ValueError:
        raise KeyMaterialError(what, f"{path}: not a PEM certificate") from None
    except x509.ExtensionNotFound:
        raise KeyMaterialError(what, f"{path}: not a CA (no basicConstraints)") from None
    if not constraints.ca:
        raise KeyMaterialError(what, f"{path}: not a CA (basicConstraints ca=false)")
    return cert


def load_platform_key(path: Path) -> ec.EllipticCurvePublicKey:
    """The platform signing key from its PEM certificate (``[platform] cert_file``).

    Raises :class:`KeyMaterialError` for a missing, unreadable or oversized file, a file that is
    not a PEM certificate, or a key that is not P-256 (ES256 needs one). The certificate's
    validity dates are not enforced here: the hub's clock may be wrong at boot, and a receipt's
    own ``iat``/``exp`` bound what it may do.
    """
    what = "platform certificate"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CERT_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyMaterialError(what, f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_CERT_FILE_BYTES:
        raise KeyMaterialError(what, f"{path}: larger than {MAX_CERT_FILE_BYTES} bytes")
    try:
        cert = x509.load_pem_x509_certificate(data)
        key = cert.public_key()
    except ValueError:
        raise KeyMaterialError(what, f"{path}: not a PEM certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyMaterialError(what, f"{path}: not a P-256 key, ES256 needs one")
    return key


__all__ = ["SecurityEvent", "SecuritySink", "load_platform_key", "report_security"]
