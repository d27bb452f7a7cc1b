"""`homehub verify` and agent.verify: a captured envelope verified against the hub's certificate.

Valid: a single reading (the wire-format example, as raw CBOR, hex and base64), a compressed
single, a compressed batch, a batch naming its Devices by digest given an earlier envelope that
carried them (``--devices-from``; without it, refused saying it needs one). Refused, exit 2
with the reason on one line: a tampered byte, the wrong certificate, the wrong CA, an expired
certificate, a hub that is not the certificate's CN, an unknown dictionary, garbage.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import dictionaries
from agent.cli import main
from agent.envelopes import ReadingPayload, build_batch, build_single
from agent.errors import IntegrityError
from agent.ingest import Signer
from agent.verify import decode_input, verify_envelope
from hil.train_dictionaries import hub_backlog, synthetic_signer
from hil.wire_example import EXAMPLE_KEY_SCALAR, example_envelope
from tests import phi_canaries

NOW: Final = dt.datetime.now(dt.UTC)
EXAMPLE_KEY: Final = ec.derive_private_key(EXAMPLE_KEY_SCALAR, ec.SECP256R1())
CA_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub verify test CA key 01234", "big"), ec.SECP256R1()
)
OTHER_CA_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub verify other CA key 0123", "big"), ec.SECP256R1()
)
OTHER_KEY: Final = ec.derive_private_key(
    int.from_bytes(b"homehub verify other hub key 012", "big"), ec.SECP256R1()
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(key: ec.EllipticCurvePrivateKey, cn: str = "test CA") -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )


CA: Final = _ca(CA_KEY)
OTHER_CA: Final = _ca(OTHER_CA_KEY)


def _cert(
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    *,
    ca_key: ec.EllipticCurvePrivateKey = CA_KEY,
    ca: x509.Certificate = CA,
    not_after: dt.datetime = NOW + dt.timedelta(days=30),
) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(not_after - dt.timedelta(days=60))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _backlog_envelopes() -> tuple[list[ReadingPayload], Signer]:
    stored = hub_backlog(12, 99)
    readings = [
        ReadingPayload.from_stored(cbor2.loads(r.payload)["seq"], r.envelope) for r in stored
    ]
    return readings, synthetic_signer(99)


def _run(
    tmp_path: Path, envelope: bytes, cert: bytes, ca: bytes | None = None, *extra: str
) -> list[str]:
    (tmp_path / "envelope").write_bytes(envelope)
    (tmp_path / "hub.pem").write_bytes(cert)
    args = ["verify", str(tmp_path / "envelope"), "--cert", str(tmp_path / "hub.pem")]
    if ca is not None:
        (tmp_path / "ca.pem").write_bytes(ca)
        args += ["--ca", str(tmp_path / "ca.pem")]
    return args + list(extra)


def _same_digits(original: Any, printed: Any) -> bool:
    """Equal content, every decimal printed with exactly its digits, bytes as hex."""
    if isinstance(original, dict):
        return (
            isinstance(printed, dict)
            and len(original) == len(printed)
            and all(_same_digits(v, printed[str(k)]) for k, v in original.items())
        )
    if isinstance(original, list):
        return len(original) == len(printed) and all(
            _same_digits(a, b) for a, b in zip(original, printed, strict=True)
        )
    if isinstance(original, Decimal):
        return str(original) == str(printed)
    if isinstance(original, bytes):
        return bool(original.hex() == printed)
    return bool(original == printed)


class TestValid:
    @pytest.mark.parametrize("form", ["cbor", "hex", "base64"])
    def test_the_wire_example_in_each_form(
        self, form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        message = example_envelope()
        given = {
            "cbor": message,
            "hex": message.hex().encode() + b"\n",
            "base64": base64.b64encode(message),
        }[form]
        code = main(_run(tmp_path, given, _cert(EXAMPLE_KEY, "hub-0001"), _pem(CA)))
        out, err = capsys.readouterr()
        assert (0, "") == (code, err)
        doc = json.loads(out, parse_float=Decimal)
        assert (True, "hub-0001", form, True) == (
            doc["verified"],
            doc["signer"],
            doc["input_format"],
            doc["ca_checked"],
        )
        payload = cbor2.loads(cbor2.loads(message).value[2])
        assert _same_digits([payload], doc["readings"])
        assert None is doc["compression"]

    @pytest.mark.parametrize("dictionary_id", [1, 2])
    def test_compressed_batch_decimals_keep_their_digits(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], dictionary_id: int
    ) -> None:
        """Dictionary 2 sends version-2 readings; verify prints the version-1 readings they
        stand for, exactly the stored ones."""
        readings, signer = _backlog_envelopes()
        batch = build_batch(readings, signer, dictionaries.load()[dictionary_id], 64 * 1024)
        cert = _cert(signer.key, readings[0].hub)  # type: ignore[arg-type]
        assert 0 == main(_run(tmp_path, batch.data, cert, _pem(CA)))
        doc = json.loads(capsys.readouterr().out, parse_float=Decimal)
        assert ("zstd", dictionary_id, 12) == (
            doc["compression"],
            doc["dictionary"],
            len(doc["readings"]),
        )
        assert {1} == {r["v"] for r in doc["readings"]}
        assert "application/vnd.homehub.readings+cbor" == doc["content_type"]
        assert batch.digest.hex() == doc["digest"]
        assert _same_digits([cbor2.loads(r.payload) for r in readings], doc["readings"])
        assert "E" not in json.dumps(doc["readings"][0]["hub_time"])

    def test_devices_by_reference_given_an_earlier_envelope(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Dictionary 3: a batch naming its Devices by digest is expanded with an earlier
        envelope that carried them in full (``--devices-from``), every reading the stored
        version 1; without it, exit 2 saying what is needed."""
        readings, signer = _backlog_envelopes()
        v3 = dictionaries.load()[3]
        earlier = build_batch(readings, signer, v3, 64 * 1024)  # Devices in full
        known = earlier.device_sets_carried
        assert 3 == len(known)  # a cuff, a meter and an oximeter, each with the hub
        batch = build_batch(readings, signer, v3, 64 * 1024, known_device_sets=known)
        assert (frozenset(), known) == (batch.device_sets_carried, batch.device_sets_referenced)
        cert = _cert(signer.key, readings[0].hub)  # type: ignore[arg-type]
        args = _run(tmp_path, batch.data, cert, _pem(CA))
        assert 2 == main(args)
        err = capsys.readouterr().err
        assert err.startswith("homehub: verify: envelope: reading 0: its Devices are by reference")
        assert err.endswith("needs an earlier envelope of this hub that carried them in full"
                            " (--devices-from FILE)\n")  # fmt: skip
        (tmp_path / "earlier").write_bytes(earlier.data.hex().encode())
        assert 0 == main([*args, "--devices-from", str(tmp_path / "earlier")])
        doc = json.loads(capsys.readouterr().out, parse_float=Decimal)
        assert (3, 12) == (doc["dictionary"], len(doc["readings"]))
        assert _same_digits([cbor2.loads(r.payload) for r in readings], doc["readings"])

    def test_compressed_single_api(self) -> None:
        readings, signer = _backlog_envelopes()
        single = build_single(readings[3], signer, dictionaries.load()[1])
        cert = _cert(signer.key, readings[0].hub)  # type: ignore[arg-type]
        result = verify_envelope(single.data, cert)
        assert (readings[3].seq,) == tuple(r.seq for r in result.readings)
        assert (False, "cbor", "zstd") == (
            result.ca_checked,
            result.input_format,
            result.envelope.encoding,
        )

    def test_console_script(self, tmp_path: Path) -> None:
        """The installed entry point, in a real process: exit 0 and JSON; exit 2 and a line."""
        exe = Path(sys.executable).with_name("homehub")
        args = _run(tmp_path, example_envelope().hex().encode(), _cert(EXAMPLE_KEY, "hub-0001"))
        ok = subprocess.run(
            [str(exe), *args], capture_output=True, text=True, timeout=60, check=False
        )
        phi_canaries.record_output("test_console_script (valid): stdout", ok.stdout)
        phi_canaries.record_output("test_console_script (valid): stderr", ok.stderr)
        assert 0 == ok.returncode, ok.stderr
        assert "hub-0001" == json.loads(ok.stdout)["hub"]
        (tmp_path / "envelope").write_bytes(b"garbage")
        bad = subprocess.run(
            [str(exe), *args], capture_output=True, text=True, timeout=60, check=False
        )
        phi_canaries.record_output("test_console_script (garbage): stdout", bad.stdout)
        phi_canaries.record_output("test_console_script (garbage): stderr", bad.stderr)
        assert (2, "") == (bad.returncode, bad.stdout)
        assert "homehub: verify: input: not a COSE_Sign1 as raw CBOR, hex or base64\n" == bad.stderr


def _tampered() -> bytes:
    data = bytearray(example_envelope())
    data[-1] ^= 0x01  # the signature's last byte
    return bytes(data)


class TestRefused:
    @pytest.mark.parametrize(
        ("case", "reason"),
        [
            ("tampered", "COSE_Sign1: signature does not verify"),
            ("wrong cert", "COSE_Sign1: kid does not match the verification key"),
            ("wrong CA", "hub certificate: not issued by the CA given (issuer differs)"),
            ("CA of the same name", "hub certificate: its signature does not verify with the CA"),
            ("expired", "hub certificate: expired on "),
            ("other hub", "envelope: its hub is not the certificate's CN"),
            ("garbage", "input: not a COSE_Sign1 as raw CBOR, hex or base64"),
            ("odd hex", "input: not a COSE_Sign1 as raw CBOR, hex or base64"),
            ("truncated", "COSE_Sign1: envelope: truncated CBOR"),
            ("not a cert", "hub certificate: not a PEM or DER X.509 certificate"),
            ("CA not a CA", "CA certificate: not a CA"),
            ("no dictionaries", "dictionary manifest: "),
        ],
    )
    def test_exit_2_with_the_reason(
        self, case: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        message, cert, ca = example_envelope(), _cert(EXAMPLE_KEY, "hub-0001"), _pem(CA)
        extra: list[str] = []
        if case == "tampered":
            message = _tampered()
        elif case == "wrong cert":
            cert = _cert(OTHER_KEY, "hub-0001")
        elif case == "wrong CA":
            ca = _pem(_ca(OTHER_CA_KEY, "another CA"))
        elif case == "CA of the same name":
            ca = _pem(OTHER_CA)
        elif case == "expired":
            cert = _cert(EXAMPLE_KEY, "hub-0001", not_after=NOW - dt.timedelta(seconds=5))
        elif case == "other hub":
            cert = _cert(EXAMPLE_KEY, "hub-0002")
        elif case == "garbage":
            message = b"this is not an envelope\n"
        elif case == "odd hex":
            message = message.hex()[:-1].encode()
        elif case == "truncated":
            message = message[:-10]
        elif case == "not a cert":
            cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        elif case == "CA not a CA":
            ca = _cert(OTHER_KEY, "test CA")
        elif case == "no dictionaries":
            message = build_single(
                ReadingPayload.from_stored(1, example_envelope()),
                Signer.from_key(EXAMPLE_KEY),
                dictionaries.load()[1],
            ).data
            extra = ["--dictionaries", str(tmp_path)]
        code = main(_run(tmp_path, message, cert, ca, *extra))
        out, err = capsys.readouterr()
        assert (2, "") == (code, out)
        assert err.startswith(f"homehub: verify: {reason}"), err
        assert 1 == err.count("\n")

    def test_unknown_dictionary(self, tmp_path: Path) -> None:
        message = build_single(
            ReadingPayload.from_stored(1, example_envelope()),
            Signer.from_key(EXAMPLE_KEY),
            dictionaries.load()[1],
        ).data
        with pytest.raises(IntegrityError, match="zstd dictionary 1 is not available"):
            verify_envelope(message, _cert(EXAMPLE_KEY, "hub-0001"), dictionaries={})

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = _run(tmp_path, b"", _cert(EXAMPLE_KEY, "hub-0001"))
        args[1] = str(tmp_path / "absent")
        assert 2 == main(args)
        assert "cannot be read" in capsys.readouterr().err

    def test_input_bounded(self) -> None:
        with pytest.raises(IntegrityError, match="exceeds"):
            decode_input(b"a" * (4 * 1024 * 1024 + 1))

    def test_not_yet_valid(self) -> None:
        cert = _cert(EXAMPLE_KEY, "hub-0001", not_after=NOW + dt.timedelta(days=90))
        with pytest.raises(IntegrityError, match="not valid before"):
            verify_envelope(example_envelope(), cert, now=NOW)
