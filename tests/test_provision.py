"""``homehub provision`` end to end against the virtual home's platform: a real mosquitto
(TLS, client certificates, ACL) with the test PKI, the reference platform's console answering
provisioning checks, and the CLI as the technician runs it; from arguments and from a bundle.

A fresh hub makes its key and CSR, the depot's CA issues the certificate, provisioning imports
it, sets the platform and binds the patient, then proves it all with a signed check that the
platform confirms. A second run changes nothing. The patient reference (the suite's canary)
appears in no output.
"""

from __future__ import annotations

import asyncio
import stat
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509

from agent import cose, instance_lock
from hil.broker import Broker
from hil.crash_child import DEVICE, DEVICE_CONFIG, raw_measurement
from hil.pki import DevPki
from hil.platform_console import PlatformConsole
from hil.receiver import Receiver
from tests import phi_canaries
from tests.platform_hub import running_hub
from tests.provision_home import (
    FreshHub,
    file_state,
    fresh_hub,
    hub_public_key,
    issue,
    provision,
    write_bundle,
)

SUBSCRIBE_TIMEOUT_S: Final = 10.0
UNCHANGED: Final = {"kept", "unchanged", "checked", "skipped"}


@pytest.fixture
async def console(dev_pki: DevPki, broker: Broker) -> AsyncIterator[PlatformConsole]:
    """The reference platform's console, confirming provisioning checks."""
    async with PlatformConsole.for_dev_pki(dev_pki, broker.port, confirm_checks=True) as running:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await running.subscribed.wait()
        yield running


async def _csr_and_certificate(
    hub: FreshHub, pki: DevPki, console: PlatformConsole, *, learn: bool = True
) -> Path:
    """Steps 1-3 on the fresh hub, then the depot's CA issues for the CSR and the platform
    learns the certificate (as it does when its CA issues one)."""
    run = await provision(["csr", "--config", str(hub.config), "--json"])
    assert run.code == 0, run.err
    assert run.results() == {"identity": "unchanged", "key": "created", "csr": "written"}
    assert stat.S_IMODE(hub.key.stat().st_mode) == 0o600
    issued = issue(pki, hub.csr, hub.root / "issued.pem")
    if learn:
        console.learn_hub_key(pki.hub_id, hub_public_key(hub))
    return issued


def _apply_args(hub: FreshHub, pki: DevPki, broker: Broker, cert: Path) -> list[str]:
    return [
        "apply",
        "--config",
        str(hub.config),
        "--cert",
        str(cert),
        "--ca",
        str(pki.ca_cert),
        "--platform-cert",
        str(pki.platform_cert),
        "--host",
        "127.0.0.1",
        "--port",
        str(broker.port),
        "--patient-file",
        str(hub.patient_file),
        "--timeout-s",
        "10",
        "--json",
    ]


async def test_provision_from_arguments_end_to_end_then_again_changes_nothing(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
) -> None:
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console)

    run = await provision(_apply_args(hub, dev_pki, broker, cert))

    assert run.code == 0, run.err
    assert run.json["ok"] is True
    assert run.results() == {
        "identity": "unchanged",
        "key": "kept",
        "csr": "kept",
        "certificate": "imported",
        "platform": "set",
        "patient": "bound",
        "configuration": "written",
        "handshake": "checked",
        "check": "checked",
    }
    assert [s["step"] for s in run.json["steps"]] == list(range(1, 10))
    cfg = tomllib.loads(hub.config.read_text())
    assert cfg["patient"]["id"] == phi_canaries.PATIENT_ID
    assert cfg["mqtt"]["host"] == "127.0.0.1"
    assert cfg["mqtt"]["port"] == broker.port
    platform_cert = hub.root / "tls" / "platform.pem"
    assert cfg["platform"]["cert_file"] == str(platform_cert)
    assert platform_cert.read_bytes() == dev_pki.platform_cert.read_bytes()
    assert "# set by homehub provision" in hub.config.read_text()  # comments kept
    # The platform verified the check and got the hub's signed reply to its confirmation.
    assert console.confirmed_checks == 1
    reply = await asyncio.wait_for(
        console.wait_for(lambda m: m.kind == "replies" and m.body["op"] == "confirm_provisioning"),
        SUBSCRIBE_TIMEOUT_S,
    )
    assert reply.body["ok"] is True
    assert not console.of("status")  # no status, no reading: nothing for the patient's record

    before = file_state(hub.config, hub.key, hub.cert, hub.ca, hub.csr)
    again = await provision(_apply_args(hub, dev_pki, broker, cert))
    assert again.code == 0, again.err
    assert set(again.results().values()) <= UNCHANGED
    assert again.json["changed"] is False
    assert file_state(hub.config, hub.key, hub.cert, hub.ca, hub.csr) == before
    assert console.confirmed_checks == 2


async def test_provision_from_a_bundle_file_then_again_changes_nothing(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
) -> None:
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console)
    bundle = write_bundle(tmp_path / "hub-0001.toml", dev_pki, port=broker.port, certificate=cert)

    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])

    assert run.code == 0, run.err
    results = run.results()
    assert results["certificate"] == "imported"
    assert results["patient"] == "bound"
    assert results["check"] == "checked"
    before = file_state(hub.config, hub.key, hub.cert, hub.ca)
    again = await provision(["bundle", str(bundle), "--config", str(hub.config)])
    assert again.code == 0, again.err
    assert "provisioned: nothing changed" in again.out
    assert "patient reference bound" in again.out
    assert file_state(hub.config, hub.key, hub.cert, hub.ca) == before
    # The check alone: proves the hub as it is, changes nothing.
    checked = await provision(["check", "--config", str(hub.config), "--json"])
    assert checked.code == 0, checked.err
    assert checked.json["complete"] is True
    assert checked.json["changed"] is False
    assert checked.results()["check"] == "checked"
    assert console.confirmed_checks == 3


async def test_a_bundle_without_certificate_stops_pending_after_the_csr(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    hub = fresh_hub(tmp_path)
    bundle = write_bundle(tmp_path / "b.toml", dev_pki, port=8883, certificate=None)

    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])

    assert run.code == 0, run.err
    results = run.results()
    assert results["key"] == "created"
    assert results["csr"] == "written"
    assert results["certificate"] == "pending"
    assert results["handshake"] == "skipped"
    assert hub.csr.exists()
    assert not hub.cert.exists()


@pytest.mark.parametrize("why", ["silent", "unknown_certificate"])
async def test_the_platform_not_answering_fails_step_9_with_exit_1(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
    why: str,
) -> None:
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console, learn=why != "unknown_certificate")
    console.confirm_checks = why != "silent"
    args = _apply_args(hub, dev_pki, broker, cert)
    args[args.index("--timeout-s") + 1] = "1"

    run = await provision(args)

    assert run.code == 1
    assert run.json["failed"]["step"] == 9
    assert "did not confirm the check within 1 s" in run.json["failed"]["reason"]
    assert "register it with the platform" in run.json["failed"]["fix"]
    assert run.results()["handshake"] == "checked"
    assert "step 9 (signed check)" in run.err
    assert console.confirmed_checks == 0
    if why == "unknown_certificate":
        assert console.unverified >= 1  # the check arrived; the platform could not verify it


async def test_a_broker_certificate_outside_the_chain_fails_step_8_with_exit_1(
    tmp_path: Path,
    dev_pki: DevPki,
    foreign_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
) -> None:
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console)
    args = _apply_args(hub, dev_pki, broker, cert)
    # The issuing CA is given as the client CA; the chain the hub trusts for the broker is
    # another CA's: step 4 passes, the handshake refuses the broker.
    args[args.index("--ca") + 1] = str(foreign_pki.ca_cert)
    args += ["--client-ca", str(dev_pki.ca_cert)]

    run = await provision(args)

    assert run.code == 1
    failed = run.json["failed"]
    assert failed["step"] == 8
    assert "the broker's certificate was not accepted" in failed["reason"]
    assert "CA chain" in failed["fix"]
    assert run.results()["certificate"] == "imported"


async def test_a_wrong_platform_certificate_fails_step_9(
    tmp_path: Path,
    dev_pki: DevPki,
    foreign_pki: DevPki,
    broker: Broker,
    console: PlatformConsole,
) -> None:
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console)
    args = _apply_args(hub, dev_pki, broker, cert)
    args[args.index("--platform-cert") + 1] = str(foreign_pki.platform_cert)

    run = await provision(args)

    assert run.code == 1
    failed = run.json["failed"]
    assert failed["step"] == 9
    assert "does not verify with [platform] cert_file" in failed["reason"]
    assert "--platform-cert" in failed["fix"]


async def test_an_unreachable_broker_fails_step_8_with_exit_1(
    tmp_path: Path,
    dev_pki: DevPki,
    unused_tcp_port: int,
) -> None:
    hub = fresh_hub(tmp_path)
    run = await provision(["csr", "--config", str(hub.config)])
    assert run.code == 0, run.err
    cert = issue(dev_pki, hub.csr, hub.root / "issued.pem")
    args = [
        "apply",
        "--config",
        str(hub.config),
        "--cert",
        str(cert),
        "--ca",
        str(dev_pki.ca_cert),
        "--platform-cert",
        str(dev_pki.platform_cert),
        "--host",
        "127.0.0.1",
        "--port",
        str(unused_tcp_port),
        "--timeout-s",
        "1.5",
        "--json",
    ]

    run = await provision(args)

    assert run.code == 1
    failed = run.json["failed"]
    assert failed["step"] == 8
    assert f"127.0.0.1:{unused_tcp_port} was not reached within 1.5 s" in failed["reason"]
    assert "homehub provision check" in failed["fix"]
    # Steps 1-7 were done and stay done: the check alone can be run again.
    assert run.results()["configuration"] == "written"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("foreign_ca", "not issued by a CA of the given chain"),
        ("other_key", "the certificate's key is not the hub's key"),
        ("expired", "not valid now"),
    ],
)
async def test_a_certificate_refused_at_step_4_names_the_fix_and_exits_2(
    tmp_path: Path,
    dev_pki: DevPki,
    foreign_pki: DevPki,
    case: str,
    reason: str,
) -> None:
    hub = fresh_hub(tmp_path)
    run = await provision(["csr", "--config", str(hub.config)])
    assert run.code == 0, run.err
    ca = dev_pki.ca_cert
    if case == "foreign_ca":
        cert = issue(foreign_pki, hub.csr, hub.root / "issued.pem")
    elif case == "other_key":
        cert = dev_pki.hub_cert  # the PKI's own hub key, not this hub's
    else:
        cert = issue(dev_pki, hub.csr, hub.root / "issued.pem", expired=True)
    before = file_state(hub.config)

    run = await provision(
        ["apply", "--config", str(hub.config), "--cert", str(cert), "--ca", str(ca), "--json"],
    )

    assert run.code == 2
    failed = run.json["failed"]
    assert failed["step"] == 4
    assert reason in failed["reason"]
    assert run.err.startswith("homehub: provision: step 4 (import certificate): ")
    assert run.err.count("\n") == 1
    assert not hub.cert.exists()
    assert file_state(hub.config) == before  # nothing written past the failed step
    if case == "other_key":
        assert "homehub provision csr" in failed["fix"]


@pytest.mark.parametrize(
    ("extra", "version", "field"),
    [
        ("", 2, "version"),
        ('colour = "blue"', 1, "colour"),
    ],
)
async def test_a_bad_bundle_is_refused_naming_the_field_with_exit_2(
    tmp_path: Path,
    dev_pki: DevPki,
    extra: str,
    version: int,
    field: str,
) -> None:
    hub = fresh_hub(tmp_path)
    bundle = write_bundle(
        tmp_path / "b.toml", dev_pki, port=8883, certificate=None, extra=extra, version=version
    )

    run = await provision(["bundle", str(bundle), "--config", str(hub.config)])

    assert run.code == 2
    assert f"{bundle}: {field}:" in run.err
    assert not hub.key.exists()  # refused before any step


async def test_rerunning_csr_keeps_the_key_and_rotate_key_replaces_it(tmp_path: Path) -> None:
    hub = fresh_hub(tmp_path)
    first = await provision(["csr", "--config", str(hub.config), "--json"])
    key = hub.key.read_bytes()
    again = await provision(["csr", "--config", str(hub.config), "--json"])
    assert first.code == again.code == 0
    assert again.results() == {"identity": "unchanged", "key": "kept", "csr": "kept"}
    assert hub.key.read_bytes() == key
    rotated = await provision(["csr", "--config", str(hub.config), "--rotate-key", "--json"])
    assert rotated.results()["key"] == "rotated"
    assert rotated.results()["csr"] == "written"
    assert hub.key.read_bytes() != key


async def test_provisioning_is_refused_while_the_daemon_runs(tmp_path: Path) -> None:
    hub = fresh_hub(tmp_path)
    with instance_lock.hold(hub.root / "state"):  # what homehub run holds for its life
        run = await provision(["csr", "--config", str(hub.config), "--json"])
    assert run.code == 2
    assert run.json["failed"]["step"] == 1
    assert "daemon is running" in run.json["failed"]["reason"]
    assert "systemctl stop homehub" in run.json["failed"]["fix"]
    assert not hub.key.exists()


async def test_a_new_hub_id_at_the_csr_step_is_written_and_guarded_once_certified(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    hub = fresh_hub(tmp_path, hub_id="hub-9999")
    run = await provision(["csr", "--config", str(hub.config), "--hub-id", "hub-0001", "--json"])
    assert run.code == 0, run.err
    assert run.results()["identity"] == "set"
    assert run.results()["configuration"] == "written"
    assert tomllib.loads(hub.config.read_text())["hub"]["id"] == "hub-0001"
    cert = issue(dev_pki, hub.csr, hub.root / "issued.pem")
    imported = await provision(
        [
            "apply",
            "--config",
            str(hub.config),
            "--cert",
            str(cert),
            "--ca",
            str(dev_pki.ca_cert),
            "--no-check",
            "--json",
        ]
    )
    assert imported.results()["certificate"] == "imported"
    # Once it holds a certificate, the hub is not renamed silently.
    renamed = await provision(["csr", "--config", str(hub.config), "--hub-id", "hub-0002"])
    assert renamed.code == 2
    assert "step 1 (hub id): this hub is provisioned as hub-0001" in renamed.err
    assert "--rotate-key" in renamed.err


async def test_another_patient_is_refused_while_the_outbox_of_the_last_one_exists(
    tmp_path: Path,
) -> None:
    hub = fresh_hub(tmp_path)
    (hub.root / "state" / "outbox.db").write_bytes(b"")  # the daemon ran: it served someone
    before = file_state(hub.config)
    run = await provision(
        ["apply", "--config", str(hub.config), "--patient-file", str(hub.patient_file), "--json"]
    )
    assert run.code == 2
    assert run.json["failed"]["step"] == 6
    assert "homehub factory-reset" in run.json["failed"]["fix"]
    assert file_state(hub.config) == before


async def test_the_provisioned_hub_runs_and_its_readings_are_receipted(
    tmp_path: Path,
    dev_pki: DevPki,
    broker: Broker,
    receiver: Receiver,
    console: PlatformConsole,
) -> None:
    """What provisioning wrote is what the daemon runs with: its first reading, signed with
    the key made at step 2, is verified and receipted by the reference receiver (which the
    platform told the issued certificate), and its status verifies with that key."""
    hub = fresh_hub(tmp_path)
    cert = await _csr_and_certificate(hub, dev_pki, console)
    await receiver.add_hub_certificate(
        dev_pki.hub_id, x509.load_pem_x509_certificate(cert.read_bytes())
    )
    bundle = write_bundle(tmp_path / "b.toml", dev_pki, port=broker.port, certificate=cert)
    run = await provision(["bundle", str(bundle), "--config", str(hub.config), "--json"])
    assert run.code == 0, run.err

    async with running_hub(hub.config) as daemon:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S * 3):
            await console.wait_for(lambda m: m.kind == "status" and m.body["state"] == "online")
            await daemon.receive(raw_measurement(1), DEVICE, DEVICE_CONFIG)
            await receiver.wait_until(lambda s: s.held_items >= 1)
            reading = await receiver.readings.get()
    assert reading.hub_id == dev_pki.hub_id
    assert reading.kid == cose.key_id(hub_public_key(hub))
    assert daemon.security_events == 0
