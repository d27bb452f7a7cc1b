"""The provisioning steps in order (docs/provisioning.md): each one does its part, reports
what it did through ``show`` as it ends, and stops the run with the step's error and fix.

Inputs come from the command line or from a bundle (:class:`Inputs`, the same for both).
The run holds the hub's lock (:mod:`agent.instance_lock`): the daemon must not run while its
key, certificate and configuration change, nor connect under the hub's client id while the
check does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric import ec

from agent import config, instance_lock
from agent.config import PATIENT_ID_RE, Config
from agent.errors import KeyMaterialError
from agent.ingest import Signer
from agent.profiles import HUB_ID_RE
from agent.provisioning import identity, settings
from agent.provisioning.bundle import MAX_HOST_CHARS
from agent.provisioning.proof import ANSWER_TIMEOUT_S, CONNECT_TIMEOUT_S, prove
from agent.provisioning.steps import (
    Outcome,
    ProvisionRefusedError,
    Step,
    StepResult,
)
from agent.security import load_platform_key

if TYPE_CHECKING:
    from agent.keys.pkcs11_provider import Pkcs11KeyProvider
    from agent.provisioning.token_key import TokenKey

Show = Callable[[StepResult], None]

PROFILES = ("mqtt", "azure_iot_hub", "aws_iot_core")

ARGUMENT_NAMES: Final = {
    "certificate": "--cert",
    "signing_certificate": "--signing-cert",
    "ca_chain": "--ca",
    "platform_cert": "--platform-cert",
    "client_ca": "--client-ca",
    "hub_id": "--hub-id",
    "patient": "--patient-file",
}
BUNDLE_NAMES: Final = {
    "certificate": "bundle pem.certificate",
    "signing_certificate": "bundle pem.signing_certificate",
    "ca_chain": "bundle pem.ca_chain",
    "platform_cert": "bundle pem.platform_certificate",
    "client_ca": "bundle pem.client_ca",
    "hub_id": "bundle hub_id",
    "patient": "bundle patient_id",
}


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the technician gives (every field optional: what is not given is kept).

    PEM fields are bytes as read (bounded) from files or from the bundle. ``source`` names
    where they came from in errors (``"--cert"``, ``"bundle pem.certificate"``).
    """

    hub_id: str | None = None
    host: str | None = None
    port: int | None = None
    profile: str | None = None
    ca_chain_pem: bytes | None = None
    certificate_pem: bytes | None = None
    signing_certificate_pem: bytes | None = None
    """The signing key's certificate: only for a hub whose signing key is not its TLS key
    (``[keys] provider = "pkcs11"``)."""
    platform_cert_pem: bytes | None = None
    client_ca_pem: bytes | None = None
    patient_id: str | None = field(default=None, repr=False)
    csr_path: Path | None = None
    rotate_key: bool = False
    names: Mapping[str, str] = field(default_factory=lambda: dict(ARGUMENT_NAMES))
    """How errors name each input: the argument, or the bundle's field."""

    def __repr__(self) -> str:
        return f"Inputs(hub_id={self.hub_id!r}, host={self.host!r}, profile={self.profile!r})"


@dataclass(frozen=True, slots=True)
class Options:
    """How far to go and how long to wait."""

    through: Step = Step.CHECK
    """The last step to run (``csr``: steps 1 to 3)."""
    check: bool = True
    """Steps 8 and 9 (``--no-check`` skips them: a hub provisioned offline at the depot)."""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    answer_timeout_s: float = ANSWER_TIMEOUT_S


def csr_path_of(cfg: Config, hub_id: str, given: Path | None) -> Path:
    """Where the CSR goes: as given, else beside the client certificate, named ``<hub>.csr``
    (a different name per hub on a depot's USB stick)."""
    return given if given is not None else cfg.mqtt.cert_file.with_name(f"{hub_id}.csr")


def signing_csr_path_of(csr_path: Path) -> Path:
    """Where a token signing key's CSR goes: beside the TLS one, ``<name>-signing<suffix>``
    (``hub-0042.csr``: ``hub-0042-signing.csr``)."""
    return csr_path.with_name(f"{csr_path.stem}-signing{csr_path.suffix or '.csr'}")


def signing_cert_path_of(cfg: Config) -> Path:
    """Where the signing key's certificate goes: ``[signing] cert_file``, else
    ``signing.pem`` beside the client certificate."""
    return cfg.signing.cert_file or cfg.mqtt.cert_file.with_name("signing.pem")


def patient_tag(patient_id: str) -> str:
    """A short, non-reversible tag of a patient reference for the technician's screen: the
    first 8 hex digits of SHA-256 (tells two references apart, never shows one)."""
    return hashlib.sha256(patient_id.encode()).hexdigest()[:8]


def provision(config_path: Path, inputs: Inputs, options: Options, show: Show) -> list[StepResult]:
    """Run the steps on the hub whose configuration is ``config_path``; returns every step's
    result (each also given to ``show`` as it ends). Raises the failing step's error."""
    cfg = config.load(config_path)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(instance_lock.hold(cfg.hub.state_dir))
        except instance_lock.InstanceRunningError as exc:
            who = f"pid {exc.pid}" if exc.pid is not None else "another process"
            raise ProvisionRefusedError(
                Step.IDENTITY,
                f"the homehub daemon is running ({who} holds {exc.path})",
                "stop it first (systemctl stop homehub), then run provisioning again",
            ) from None
        except OSError as exc:  # the state directory cannot hold the lock file
            raise ProvisionRefusedError(
                Step.IDENTITY,
                f"the state directory {cfg.hub.state_dir} cannot hold the hub's lock"
                f" ({exc.strerror})",
                "create it (the daemon's [hub] state_dir) or run as the user who owns it",
            ) from None
        return _run(config_path, cfg, inputs, options, show, held)


def _run(
    path: Path,
    cfg: Config,
    inputs: Inputs,
    options: Options,
    show: Show,
    held: contextlib.ExitStack,
) -> list[StepResult]:
    results: list[StepResult] = []

    def report(step: Step, outcome: Outcome, detail: str) -> None:
        result = StepResult(step, outcome, detail)
        results.append(result)
        show(result)

    wanted: dict[str, settings.Value] = {}

    # 1. identity
    hub_id = inputs.hub_id or cfg.hub.id
    if not HUB_ID_RE.fullmatch(hub_id):
        raise ProvisionRefusedError(
            Step.IDENTITY,
            f"the hub id ({inputs.names['hub_id']}) is not one ([a-z0-9][a-z0-9-], 1-63)",
            "give the hub id the depot assigned",
        )
    if hub_id != cfg.hub.id:
        _refuse_identity_change(cfg, hub_id, inputs.rotate_key)
        wanted["hub.id"] = hub_id
        report(Step.IDENTITY, Outcome.SET, f"hub id {hub_id} (was {cfg.hub.id})")
    else:
        report(Step.IDENTITY, Outcome.UNCHANGED, f"hub id {hub_id}")

    # 2. key (and the token's signing key)
    key_path = cfg.mqtt.key_file
    token: Pkcs11KeyProvider | None = None
    token_key: TokenKey | None = None
    if cfg.keys.provider == "pkcs11":
        from agent.provisioning.token_key import ensure_token_key, open_token

        token = open_token(cfg)
        held.callback(token.close)
        token_key = ensure_token_key(token, cfg, rotate=inputs.rotate_key)
    made = identity.ensure_key(key_path, rotate=inputs.rotate_key)
    key = made.key
    tls_detail = f"P-256 key {key_path} (0600), kid {identity.fingerprint(key.public_key())}"
    if token_key is None:
        _check_signing_key(cfg, key)
        if cfg.signing.key_file.resolve() != key_path.resolve():
            wanted["signing.key_file"] = str(key_path.resolve())
        report(Step.KEY, made.outcome, tls_detail)
    else:
        report(
            Step.KEY,
            _key_outcome(made.outcome, token_key.outcome),
            f"TLS: {tls_detail}, {made.outcome.value}; signing: P-256 key"
            f" {token_key.label!r} in token {token_key.token!r} (never extractable), kid"
            f" {identity.fingerprint(token_key.public_key)}, {token_key.outcome.value}",
        )

    # 3. CSR (and the signing key's, signed in the token)
    csr_path = csr_path_of(cfg, hub_id, inputs.csr_path)
    outcome = identity.ensure_csr(key, hub_id, csr_path)
    if token is None or token_key is None:
        report(Step.CSR, outcome, f"{csr_path} (CN={hub_id}): hand it to the depot's CA")
    else:
        signing_csr_path = signing_csr_path_of(csr_path)
        signing_outcome = identity.ensure_signing_csr(
            token_key.public_key, hub_id, signing_csr_path, token.sign
        )
        both = Outcome.WRITTEN if Outcome.WRITTEN in (outcome, signing_outcome) else outcome
        report(
            Step.CSR,
            both,
            f"TLS {csr_path} and signing {signing_csr_path} (keyUsage digitalSignature),"
            f" CN={hub_id}: hand both to the depot's CA",
        )
    if options.through is Step.CSR:
        if settings.differing(cfg, wanted):  # a new hub id, or the signing key's path
            _write_configuration(path, cfg, wanted, report)
        return results

    # 4. certificate(s) and CA chain
    slots = [identity.tls_slot(key.public_key(), inputs.certificate_pem, cfg.mqtt.cert_file)]
    if token_key is not None:
        signing_path = signing_cert_path_of(cfg)
        slots.append(
            identity.signing_slot(
                token_key.public_key,
                inputs.signing_certificate_pem,
                signing_path,
                signing_csr_path_of(csr_path),
            )
        )
    elif inputs.signing_certificate_pem is not None:
        raise ProvisionRefusedError(
            Step.CERTIFICATE,
            f"a signing certificate ({inputs.names['signing_certificate']}) is given, but this"
            " hub signs with its TLS key (one key, one certificate)",
            f"leave out {inputs.names['signing_certificate']}; it is for a hub whose signing"
            ' key lives in a PKCS#11 token ([keys] provider = "pkcs11")',
        )
    imported = identity.import_certificates(
        hub_id,
        slots,
        chain_pem=inputs.ca_chain_pem,
        client_ca_pem=inputs.client_ca_pem,
        chain_path=cfg.mqtt.ca_file,
        now=dt.datetime.now(dt.UTC),
        names=inputs.names,
    )
    chain = "CA chain written" if imported.chain is Outcome.WRITTEN else "CA chain unchanged"
    if token_key is None and imported.certificate is Outcome.PENDING:
        report(
            Step.CERTIFICATE,
            Outcome.PENDING,
            f"no certificate for this key yet: run again with --cert once the CA issued one for"
            f" {csr_path}",
        )
    elif token_key is None:
        expires = imported.expires[0].date().isoformat() if imported.expires[0] else "?"
        report(
            Step.CERTIFICATE,
            imported.certificate,
            f"{cfg.mqtt.cert_file} (CN={hub_id}, valid until {expires}); {chain}",
        )
    else:
        parts = [
            _certificate_part(name, slot, outcome, expires, request)
            for name, slot, outcome, expires, request in zip(
                ("TLS", "signing"),
                slots,
                imported.outcomes,
                imported.expires,
                (csr_path, signing_csr_path_of(csr_path)),
                strict=True,
            )
        ]
        report(Step.CERTIFICATE, imported.certificate, f"{'; '.join(parts)}; {chain}")
        if imported.outcomes[1] is not Outcome.PENDING:
            wanted["signing.cert_file"] = str(slots[1].path.resolve())

    # 5. platform profile, endpoint and certificates
    platform_changes = _platform(cfg, inputs, wanted)
    where = (
        f"{inputs.profile or cfg.mqtt.profile.name} at {inputs.host or cfg.mqtt.host}:"
        f"{inputs.port or cfg.mqtt.port}"
    )
    if platform_changes:
        report(Step.PLATFORM, Outcome.SET, f"{where} ({', '.join(platform_changes)})")
    else:
        report(Step.PLATFORM, Outcome.UNCHANGED, where)

    # 6. patient reference
    if inputs.patient_id is not None:
        if not PATIENT_ID_RE.fullmatch(inputs.patient_id):
            raise ProvisionRefusedError(
                Step.PATIENT,
                f"the patient reference ({inputs.names['patient']}) is not a FHIR logical id"
                " ([A-Za-z0-9-.], 1-64)",
                "give the reference the service provider assigned, unchanged",
            )
        tag = patient_tag(inputs.patient_id)
        if inputs.patient_id != cfg.patient.id:
            _refuse_patient_change(cfg)
            wanted["patient.id"] = inputs.patient_id
            report(Step.PATIENT, Outcome.BOUND, f"patient reference bound (tag {tag})")
        else:
            report(Step.PATIENT, Outcome.UNCHANGED, f"patient reference bound (tag {tag})")
    else:
        report(
            Step.PATIENT,
            Outcome.UNCHANGED,
            f"patient reference kept (tag {patient_tag(cfg.patient.id)})",
        )

    # 7. configuration
    cfg = _write_configuration(path, cfg, wanted, report)

    # 8-9. proof
    if not options.check:
        report(Step.HANDSHAKE, Outcome.SKIPPED, "--no-check")
        report(Step.CHECK, Outcome.SKIPPED, "--no-check")
        return results
    if imported.certificate is Outcome.PENDING:
        report(Step.HANDSHAKE, Outcome.SKIPPED, "no certificate yet (step 4)")
        report(Step.CHECK, Outcome.SKIPPED, "no certificate yet (step 4)")
        return results
    if cfg.platform.cert_file is None:
        raise ProvisionRefusedError(
            Step.CHECK,
            "no platform certificate ([platform] cert_file): the confirmation cannot be verified",
            "give the platform's signing certificate (--platform-cert, or"
            " pem.platform_certificate in the bundle)",
        )
    try:
        platform_key = load_platform_key(cfg.platform.cert_file)
    except KeyMaterialError as exc:
        raise ProvisionRefusedError(
            Step.CHECK,
            f"the platform certificate cannot be used ({exc.reason})",
            "give the platform's signing certificate again (--platform-cert)",
        ) from None
    signer = Signer.from_key(key) if token is None else Signer.from_provider(token)
    report_ = asyncio.run(
        prove(
            cfg,
            signer,
            platform_key,
            connect_timeout_s=options.connect_timeout_s,
            answer_timeout_s=options.answer_timeout_s,
            on_handshake=lambda endpoint: report(
                Step.HANDSHAKE, Outcome.CHECKED, f"{endpoint}: mutual TLS, CN={hub_id}"
            ),
        )
    )
    report(
        Step.CHECK,
        Outcome.CHECKED,
        f"check {report_.check_id} confirmed by the platform, signature verified"
        f" ({report_.round_trip_ms} ms)",
    )
    return results


def _key_outcome(tls: Outcome, signing: Outcome) -> Outcome:
    """Step 2's result for two keys: ``rotated`` or ``created`` when either was, else
    ``kept``."""
    for outcome in (Outcome.ROTATED, Outcome.CREATED):
        if outcome in (tls, signing):
            return outcome
    return Outcome.KEPT


def _certificate_part(
    name: str,
    slot: identity.CertificateSlot,
    outcome: Outcome,
    expires: dt.datetime | None,
    request: Path,
) -> str:
    """One certificate's part of step 4's line on a hub with two."""
    if outcome is Outcome.PENDING:
        flag = "--cert" if slot.input_name == "certificate" else "--signing-cert"
        return f"{name}: pending, run again with {flag} once the CA issued one for {request}"
    until = expires.date().isoformat() if expires else "?"
    return f"{name}: {slot.path} {outcome.value} (valid until {until})"


def _write_configuration(
    path: Path,
    cfg: Config,
    wanted: Mapping[str, settings.Value],
    report: Callable[[Step, Outcome, str], None],
) -> Config:
    """Step 7: every key the steps before want, in one validated write (none when nothing
    differs); the configuration as the daemon will read it."""
    changes = settings.differing(cfg, wanted)
    if not changes:
        report(Step.CONFIGURATION, Outcome.UNCHANGED, f"{path}")
        return cfg
    updated = settings.apply(path, changes)
    report(Step.CONFIGURATION, Outcome.WRITTEN, f"{path}: {', '.join(sorted(changes))}")
    return updated


def _refuse_identity_change(cfg: Config, hub_id: str, rotate: bool) -> None:
    """A hub that holds a certificate for its id keeps that id unless the key is rotated too:
    its identity is not replaced silently."""
    if rotate or not cfg.mqtt.cert_file.exists():
        return
    raise ProvisionRefusedError(
        Step.IDENTITY,
        f"this hub is provisioned as {cfg.hub.id} (it holds a certificate), not {hub_id}",
        "to make it another hub, run again with --rotate-key (a new key and certificate; the"
        " old identity is no longer used); factory-reset it first if it served a patient",
    )


def _refuse_patient_change(cfg: Config) -> None:
    """A hub whose outbox exists has served the patient bound now: it is factory-reset
    (crypto-erase) before it serves another, so one patient's readings never wait on a hub
    bound to the next."""
    if not cfg.outbox.path.exists():
        return
    raise ProvisionRefusedError(
        Step.PATIENT,
        f"the hub holds an outbox ({cfg.outbox.path}) of the patient bound now",
        "factory-reset it first (homehub factory-reset --config FILE --yes: every stored"
        " reading is lost), then provision it for the new patient",
    )


def _check_signing_key(cfg: Config, key: ec.EllipticCurvePrivateKey) -> None:
    """The signing key must be the hub key (the platform verifies with the certificate's
    key): a separate signing key file holding another key is refused, not overwritten."""
    signing = cfg.signing.key_file
    if signing.resolve() == cfg.mqtt.key_file.resolve() or not signing.exists():
        return
    try:
        other = identity.cose_key(signing)
    except KeyMaterialError:
        other = None
    if other is not None and identity.same_key(other.public_key(), key.public_key()):
        return
    raise ProvisionRefusedError(
        Step.KEY,
        f"[signing] key_file {signing} holds another key than the hub key {cfg.mqtt.key_file}",
        "the platform verifies the hub's messages with its certificate's key: remove"
        f" {signing} (provisioning then signs with the hub key) or set [signing] key_file to"
        f" {cfg.mqtt.key_file}",
    )


def _platform(cfg: Config, inputs: Inputs, wanted: dict[str, settings.Value]) -> list[str]:
    """Step 5: the endpoint, the profile and the platform's certificates; returns what
    changes (written at step 7, the certificate files now)."""
    step = Step.PLATFORM
    if inputs.profile is not None and inputs.profile not in PROFILES:
        raise ProvisionRefusedError(
            step,
            f"profile {inputs.profile!r} is not one of {', '.join(PROFILES)}",
            "give --profile as the platform names it",
        )
    if inputs.host is not None:
        if not 1 <= len(inputs.host) <= MAX_HOST_CHARS or any(
            c.isspace() or c == "/" for c in inputs.host
        ):
            raise ProvisionRefusedError(
                step, "--host is not a host name or address", "give the broker's host name"
            )
        wanted["mqtt.host"] = inputs.host
    if inputs.port is not None:
        wanted["mqtt.port"] = inputs.port
    if inputs.profile is not None:
        wanted["mqtt.profile"] = inputs.profile
    changed = [k for k in settings.differing(cfg, wanted) if k.startswith("mqtt.")]
    tls_dir = cfg.mqtt.ca_file.parent
    for pem, key, name, what in (
        (inputs.platform_cert_pem, "platform.cert_file", "platform.pem", "platform certificate"),
        (inputs.client_ca_pem, "platform.client_ca_file", "client-ca.pem", "client CA"),
    ):
        if pem is None:
            continue
        current = settings.current(cfg, key)
        target = current if isinstance(current, Path) else tls_dir / name
        source = inputs.names["platform_cert" if key == "platform.cert_file" else "client_ca"]
        cert = identity.load_certificates(pem, f"the {what} ({source})", step)[0]
        if what == "platform certificate":
            _require_p256(cert.public_key())
        data = identity.pem_of(cert)
        if identity.install_public(target, data, step, what) is Outcome.WRITTEN:
            changed.append(f"{what} written")
        wanted[key] = str(target.resolve())
    platform_keys = {k: v for k, v in wanted.items() if k.startswith("platform.")}
    changed += list(settings.differing(cfg, platform_keys))
    return changed


def _require_p256(key: object) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ProvisionRefusedError(
            Step.PLATFORM,
            "the platform certificate is not for a P-256 key (ES256 needs one)",
            "give the platform's signing certificate, not its TLS certificate",
        )


__all__ = [
    "ARGUMENT_NAMES",
    "BUNDLE_NAMES",
    "Inputs",
    "Options",
    "csr_path_of",
    "patient_tag",
    "provision",
    "signing_cert_path_of",
    "signing_csr_path_of",
]
