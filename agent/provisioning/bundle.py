"""The provisioning bundle: one file holding what the depot knows about a hub, so that a
technician provisions it with one command (``homehub provision bundle FILE``).

Sans-I/O: bytes in, a :class:`Bundle` out, or a :class:`BundleError` naming the field. The
format (docs/provisioning.md, "The bundle file") is a TOML document of at most
:data:`MAX_BUNDLE_BYTES`::

    format = "homehub-provisioning"      # required, exactly this
    version = 1                          # required; other versions are refused
    hub_id = "hub-0001"                  # required: the client certificate's CN
    patient_id = "..."                   # optional: the patient reference to bind

    [endpoint]                           # required
    host = "rpm-platform.example.org"
    port = 8883                          # optional, 8883
    profile = "mqtt"                     # optional, "mqtt"

    [pem]                                # PEM text
    ca_chain = "..."                     # required: the broker's CA and the issuing CA(s)
    platform_certificate = "..."         # required: the platform signing certificate
    certificate = "..."                  # optional: the hub's certificate, once issued
    signing_certificate = "..."          # optional: its signing key's (a PKCS#11 hub's)
    client_ca = "..."                    # optional: the CA that issues hub certificates

Every key is checked: an unknown key, a missing one, a wrong type or a PEM block of the wrong
kind is refused with its dotted name. The private key is never in a bundle: it is made on the
hub and never leaves it; the CSR goes to the depot's CA and the certificate comes back.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any, Final

from agent.config import PATIENT_ID_RE
from agent.errors import LocalError
from agent.profiles import HUB_ID_RE

BUNDLE_FORMAT: Final = "homehub-provisioning"
BUNDLE_VERSION: Final = 1
MAX_BUNDLE_BYTES: Final = 256 * 1024
"""A CA chain of a few certificates and three more certificates take under 16 KB; 256 KiB
leaves room for long chains and refuses anything that is not a bundle before parsing it."""
MAX_PEM_CHARS: Final = 64 * 1024
MAX_HOST_CHARS: Final = 253
"""A DNS name's limit (RFC 1035 §2.3.4)."""
PROFILES: Final = ("mqtt", "azure_iot_hub", "aws_iot_core")

_TOP: Final = {"format", "version", "hub_id", "patient_id", "endpoint", "pem"}
_ENDPOINT: Final = {"host", "port", "profile"}
_PEM: Final = {
    "ca_chain",
    "platform_certificate",
    "certificate",
    "signing_certificate",
    "client_ca",
}
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"


class BundleError(LocalError):
    """A bundle file is not one this hub can use.

    Attributes:
        field: the dotted field at fault (``"pem.certificate"``), or ``None`` for the file.
        reason: what is wrong with it (never its value).
    """

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed bundle. PEM fields are the text as given (checked to be certificate PEM)."""

    hub_id: str
    host: str
    port: int
    profile: str
    ca_chain_pem: bytes
    platform_cert_pem: bytes
    certificate_pem: bytes | None = None
    signing_certificate_pem: bytes | None = None
    """The certificate of a signing key kept in a PKCS#11 token (checked by step 4: needed
    there with ``certificate``, refused on a hub whose TLS key signs)."""
    client_ca_pem: bytes | None = None
    patient_id: str | None = None

    def __repr__(self) -> str:  # the patient reference stays out of any repr
        return f"Bundle(hub_id={self.hub_id!r}, host={self.host!r}, profile={self.profile!r})"


def parse_bundle(data: bytes) -> Bundle:
    """Parse and check a bundle file's bytes; :class:`BundleError` names what is wrong."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(None, f"larger than {MAX_BUNDLE_BYTES} bytes: not a bundle")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(None, "not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(None, f"not TOML ({exc})") from None
    _only(doc, _TOP, "")
    if "format" not in doc:
        raise BundleError("format", f'missing (a bundle starts with format = "{BUNDLE_FORMAT}")')
    if doc["format"] != BUNDLE_FORMAT:
        raise BundleError("format", f'is not "{BUNDLE_FORMAT}"')
    version = doc.get("version")
    if version is None:
        raise BundleError("version", "missing")
    if type(version) is not int:
        raise BundleError("version", "is not an integer")
    if version != BUNDLE_VERSION:
        raise BundleError(
            "version", f"{version} is not supported (this hub reads version {BUNDLE_VERSION})"
        )
    hub_id = _text(doc, "hub_id", "hub_id", required=True)
    assert hub_id is not None
    if not HUB_ID_RE.fullmatch(hub_id):
        raise BundleError("hub_id", "is not a hub id ([a-z0-9][a-z0-9-], 1-63)")
    patient_id = _text(doc, "patient_id", "patient_id", required=False)
    if patient_id is not None and not PATIENT_ID_RE.fullmatch(patient_id):
        raise BundleError("patient_id", "is not a FHIR logical id ([A-Za-z0-9-.], 1-64)")
    endpoint = _table(doc, "endpoint")
    host = _text(endpoint, "host", "endpoint.host", required=True)
    assert host is not None
    if not 1 <= len(host) <= MAX_HOST_CHARS or any(c.isspace() or c == "/" for c in host):
        raise BundleError("endpoint.host", "is not a host name or address")
    port = endpoint.get("port", 8883)
    if type(port) is not int or not 1 <= port <= 65535:
        raise BundleError("endpoint.port", "is not a port (1-65535)")
    profile = endpoint.get("profile", "mqtt")
    if profile not in PROFILES:
        raise BundleError("endpoint.profile", f"is not one of {', '.join(PROFILES)}")
    pem = _table(doc, "pem")
    ca_chain = _pem(pem, "ca_chain", required=True)
    platform_cert = _pem(pem, "platform_certificate", required=True)
    assert ca_chain is not None
    assert platform_cert is not None
    return Bundle(
        hub_id=hub_id,
        host=host,
        port=port,
        profile=str(profile),
        ca_chain_pem=ca_chain,
        platform_cert_pem=platform_cert,
        certificate_pem=_pem(pem, "certificate", required=False),
        signing_certificate_pem=_pem(pem, "signing_certificate", required=False),
        client_ca_pem=_pem(pem, "client_ca", required=False),
        patient_id=patient_id,
    )


def _only(table: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            shown = f"{prefix}{key}" if key.isprintable() and len(key) <= 64 else f"{prefix}?"
            raise BundleError(shown, f"unknown field (known: {', '.join(sorted(known))})")


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name)
    if table is None:
        raise BundleError(name, f"missing (the [{name}] table)")
    if not isinstance(table, dict):
        raise BundleError(name, "is not a table")
    _only(table, _ENDPOINT if name == "endpoint" else _PEM, f"{name}.")
    return table


def _text(table: dict[str, Any], key: str, shown: str, *, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise BundleError(shown, "missing")
        return None
    if not isinstance(value, str):
        raise BundleError(shown, "is not a string")
    return value


def _pem(table: dict[str, Any], key: str, *, required: bool) -> bytes | None:
    shown = f"pem.{key}"
    value = _text(table, key, shown, required=required)
    if value is None:
        return None
    if len(value) > MAX_PEM_CHARS:
        raise BundleError(shown, f"longer than {MAX_PEM_CHARS} characters")
    if _PEM_BEGIN not in value:
        raise BundleError(shown, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return value.encode("ascii", errors="replace")


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "BundleError",
    "parse_bundle",
]
