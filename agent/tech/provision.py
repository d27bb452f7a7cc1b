"""``homehub provision``: the hub's key, CSR, certificate, platform and patient, then proof
that the platform accepts it (agent/provisioning/, docs/provisioning.md).

    homehub provision csr --config FILE [--hub-id ID] [--csr-out PATH] [--rotate-key]
    homehub provision apply --config FILE [--cert PEM] [--signing-cert PEM] [--ca PEM]
        [--platform-cert PEM] [--client-ca PEM] [--host H] [--port N] [--profile P]
        [--patient-file FILE] ...
    homehub provision bundle BUNDLE --config FILE [--csr-out PATH] [--no-check]
    homehub provision check --config FILE

Each step prints one line as it ends (a row of a table: number, step, result, detail);
``--json`` prints one JSON object with every step's result instead, and on failure the
failed step with its reason and fix. A failure also goes to stderr as one line naming the
step and the fix; exit code 2 for bad input (a file, an argument, a bundle field), 1 when
the broker or the platform failed.

The patient reference is read from a file (``--patient-file``, ``-`` for stdin) or the
bundle, never from the command line (which ``ps`` and the shell's history show), and is
never printed: the output says "patient reference bound" with a short tag.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from agent.errors import UsageError
from agent.tech.arguments import seconds_up_to

MAX_INPUT_BYTES: Final = 64 * 1024
"""A certificate, chain or patient file: a few KB at most."""
MAX_PATIENT_FILE_BYTES: Final = 1024


def add_parser(sub: Any) -> None:
    """Add the ``provision`` subcommand to the ``homehub`` parser."""
    provision = sub.add_parser(
        "provision",
        help="keys, CSR, certificate, platform, patient, then a signed check with the platform",
    )
    actions = provision.add_subparsers(dest="action", required=True, parser_class=type(provision))
    csr = actions.add_parser("csr", help="steps 1-3: the hub key (kept if present) and its CSR")
    apply = actions.add_parser("apply", help="every step, from arguments")
    bundle = actions.add_parser("bundle", help="every step, from a depot's bundle file")
    bundle.add_argument("bundle_file", type=Path, metavar="BUNDLE", help="the bundle (TOML)")
    check = actions.add_parser("check", help="prove the hub as provisioned (changes nothing)")
    for each in (csr, apply, bundle, check):
        each.add_argument("--config", type=Path, required=True, help="the hub's configuration")
        each.add_argument("--json", action="store_true", help="one JSON object of every step")
    for each in (csr, apply):
        each.add_argument("--hub-id", help="the hub id (= the certificate's CN)")
    for each in (csr, apply, bundle):
        each.add_argument(
            "--csr-out",
            type=Path,
            help="where the CSR goes (default: <hub id>.csr beside [mqtt] cert_file)",
        )
        each.add_argument(
            "--rotate-key", action="store_true", help="make a new hub key even if one exists"
        )
    apply.add_argument("--cert", type=Path, help="the hub's certificate the CA issued (PEM)")
    apply.add_argument(
        "--signing-cert",
        type=Path,
        help="pkcs11: the token signing key's certificate the CA issued (PEM)",
    )
    apply.add_argument("--ca", type=Path, help="the CA chain: broker's and issuing CA (PEM)")
    apply.add_argument("--platform-cert", type=Path, help="the platform signing certificate")
    apply.add_argument("--client-ca", type=Path, help="the CA that issues hub certificates")
    apply.add_argument("--host", help="the platform broker's host")
    apply.add_argument("--port", type=_port, help="the platform broker's port")
    apply.add_argument("--profile", choices=("mqtt", "azure_iot_hub", "aws_iot_core"))
    apply.add_argument(
        "--patient-file", type=Path, help="file holding the patient reference ('-': stdin)"
    )
    for each in (apply, bundle, check):
        if each is not check:
            each.add_argument("--no-check", action="store_true", help="skip steps 8 and 9")
        each.add_argument(
            "--timeout-s", type=_timeout, default=None, help="bound on each wait of the check"
        )


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


_timeout = seconds_up_to(300)


def _read(path: Path | None, what: str, limit: int = MAX_INPUT_BYTES) -> bytes | None:
    """A file's bytes (bounded), or a usage error naming the argument and the file."""
    if path is None:
        return None
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with path.open("rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(what, f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise UsageError(what, f"{path}: larger than {limit} bytes")
    return data


def _patient(path: Path | None) -> str | None:
    data = _read(path, "--patient-file", MAX_PATIENT_FILE_BYTES)
    if data is None:
        return None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UsageError("--patient-file", f"{path}: not ASCII text") from None
    if not text or "\n" in text:
        raise UsageError("--patient-file", f"{path}: must hold one reference on one line")
    return text


def run(args: argparse.Namespace) -> int:
    """Run ``homehub provision``."""
    from agent import logs
    from agent.provisioning.bundle import MAX_BUNDLE_BYTES, BundleError, parse_bundle
    from agent.provisioning.runner import BUNDLE_NAMES, Inputs, Options, provision
    from agent.provisioning.steps import (
        ProvisionFailedError,
        ProvisionRefusedError,
        Step,
        StepResult,
    )

    logs.configure("warning")  # stderr; stdout is the steps' table or JSON
    inputs = Inputs()
    options = Options()
    timeout_s: float | None = getattr(args, "timeout_s", None)
    waits = (
        Options()
        if timeout_s is None
        else Options(connect_timeout_s=timeout_s, answer_timeout_s=timeout_s)
    )
    if args.action == "csr":
        inputs = Inputs(hub_id=args.hub_id, csr_path=args.csr_out, rotate_key=args.rotate_key)
        options = Options(through=Step.CSR)
    elif args.action == "apply":
        inputs = Inputs(
            hub_id=args.hub_id,
            host=args.host,
            port=args.port,
            profile=args.profile,
            ca_chain_pem=_read(args.ca, "--ca"),
            certificate_pem=_read(args.cert, "--cert"),
            signing_certificate_pem=_read(args.signing_cert, "--signing-cert"),
            platform_cert_pem=_read(args.platform_cert, "--platform-cert"),
            client_ca_pem=_read(args.client_ca, "--client-ca"),
            patient_id=_patient(args.patient_file),
            csr_path=args.csr_out,
            rotate_key=args.rotate_key,
        )
        options = replace(waits, check=not args.no_check)
    elif args.action == "bundle":
        data = _read(args.bundle_file, "BUNDLE", MAX_BUNDLE_BYTES)
        assert data is not None
        try:
            parsed = parse_bundle(data)
        except BundleError as exc:
            raise UsageError("bundle", f"{args.bundle_file}: {exc}") from None
        inputs = Inputs(
            hub_id=parsed.hub_id,
            host=parsed.host,
            port=parsed.port,
            profile=parsed.profile,
            ca_chain_pem=parsed.ca_chain_pem,
            certificate_pem=parsed.certificate_pem,
            signing_certificate_pem=parsed.signing_certificate_pem,
            platform_cert_pem=parsed.platform_cert_pem,
            client_ca_pem=parsed.client_ca_pem,
            patient_id=parsed.patient_id,
            csr_path=args.csr_out,
            rotate_key=args.rotate_key,
            names=BUNDLE_NAMES,
        )
        options = replace(waits, check=not args.no_check)
    else:
        options = waits

    from agent.tech.provision_output import StepPrinter

    printer = StepPrinter(json_mode=args.json)
    try:
        results: list[StepResult] = provision(args.config, inputs, options, printer.show)
    except (ProvisionRefusedError, ProvisionFailedError) as exc:
        printer.failed(exc)
        sys.stderr.write(f"homehub: provision: {exc}\n")
        return 2 if isinstance(exc, ProvisionRefusedError) else 1
    printer.done(results)
    return 0
