"""The provisioning bundle's format (agent/provisioning/bundle.py): what parses, and every
refusal naming its field without echoing its value."""

from __future__ import annotations

from typing import Final

import pytest

from agent.provisioning.bundle import MAX_BUNDLE_BYTES, BundleError, parse_bundle
from tests import phi_canaries

PEM: Final = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _bundle(
    *,
    top: str = f'hub_id = "hub-0001"\npatient_id = "{phi_canaries.PATIENT_ID}"\n',
    head: str = 'format = "homehub-provisioning"\nversion = 1\n',
    endpoint: str = 'host = "platform.example.org"\nport = 8883\nprofile = "mqtt"\n',
    pem: str = f'ca_chain = """{PEM}"""\nplatform_certificate = """{PEM}"""\n',
) -> bytes:
    return f"{head}{top}[endpoint]\n{endpoint}[pem]\n{pem}".encode()


def test_a_valid_bundle_parses_with_its_defaults() -> None:
    parsed = parse_bundle(_bundle(endpoint='host = "platform.example.org"\n'))
    assert parsed.hub_id == "hub-0001"
    assert parsed.patient_id == phi_canaries.PATIENT_ID
    assert (parsed.host, parsed.port, parsed.profile) == ("platform.example.org", 8883, "mqtt")
    assert parsed.ca_chain_pem == PEM.encode()
    assert parsed.certificate_pem is None
    assert parsed.client_ca_pem is None
    assert phi_canaries.PATIENT_ID not in repr(parsed)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b"x" * (MAX_BUNDLE_BYTES + 1), None, "larger than"),
        (b"\xff\xfe", None, "not UTF-8"),
        (b"hub_id = ", None, "not TOML"),
        (_bundle(head="version = 1\n"), "format", "missing"),
        (_bundle(head='format = "other"\nversion = 1\n'), "format", "is not"),
        (_bundle(head='format = "homehub-provisioning"\n'), "version", "missing"),
        (_bundle(head='format = "homehub-provisioning"\nversion = "1"\n'), "version", "integer"),
        (_bundle(head='format = "homehub-provisioning"\nversion = 2\n'), "version", "2 is not"),
        (_bundle(top='hub_id = "Hub 1"\n'), "hub_id", "not a hub id"),
        (_bundle(top=""), "hub_id", "missing"),
        (_bundle(top='hub_id = "hub-0001"\npatient_id = "has space"\n'), "patient_id", "FHIR"),
        (_bundle(top='hub_id = "hub-0001"\ncolour = "blue"\n'), "colour", "unknown field"),
        (_bundle(endpoint="port = 8883\n"), "endpoint.host", "missing"),
        (_bundle(endpoint='host = "a b"\n'), "endpoint.host", "not a host"),
        (_bundle(endpoint='host = "h"\nport = 70000\n'), "endpoint.port", "not a port"),
        (_bundle(endpoint='host = "h"\nprofile = "amqp"\n'), "endpoint.profile", "one of"),
        (_bundle(endpoint='host = "h"\nuser = "x"\n'), "endpoint.user", "unknown field"),
        (_bundle(pem=f'platform_certificate = """{PEM}"""\n'), "pem.ca_chain", "missing"),
        (
            _bundle(pem=f'ca_chain = """{PEM}"""\nplatform_certificate = "not pem"\n'),
            "pem.platform_certificate",
            "no PEM certificate",
        ),
        (
            _bundle(pem=f'ca_chain = """{PEM}"""\nplatform_certificate = """{PEM}"""\nkey = "k"\n'),
            "pem.key",
            "unknown field",
        ),
    ],
)
def test_a_bad_bundle_is_refused_naming_the_field(
    data: bytes, field: str | None, reason: str
) -> None:
    with pytest.raises(BundleError) as caught:
        parse_bundle(data)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert "has space" not in str(caught.value)  # a bad value is named, never echoed
