"""The ``homehub`` command: what a technician types on the hub's terminal.

    homehub run --config FILE          the daemon (systemd starts this)
    homehub decode CHAR HEX [--from-hub]  decode one characteristic value to JSON
    homehub status --config FILE [--json] [--watch]
                                       devices, outbox, receipts, uplink, modem, clock,
                                       storage, status light, version; live with --watch
    homehub verify ENVELOPE_FILE --cert HUB_CERT [--ca CA] [--dictionaries DIR]
                   [--devices-from EARLIER_FILE ...]
                                       verify a captured envelope (hex, base64 or CBOR) and
                                       print its content as JSON
    homehub check-config FILE          validate a configuration file
    homehub config-schema              every configuration key, its type and default
    homehub factory-reset --config FILE --yes [--depot]
                                       crypto-erase: data key, KEK, outbox, bonds, allow-list,
                                       patient (refused while the daemon runs)
    homehub provision csr|apply|bundle|check --config FILE ...
                                       keys, CSR, certificate, platform, patient, then proof
    homehub doctor --config FILE [--json]
                                       a checklist with the fix for each failure
    homehub pair --config FILE [--scan-s S] [--address A] [--label L] [--json]
                                       bond a device in pairing mode, add it to the allow-list
    homehub devices list|rename OLD NEW|remove LABEL --config FILE [--json]
                                       the allow-list with bond, last sync and battery;
                                       rename keeps the device's sync state, remove deletes
                                       it and the bond (both: stop the daemon first)
    homehub modem status (--port PATH [--baud N] | --config FILE) [--json]
                                       the 5G module's figures (identity, SIM, registration,
                                       cell, signal, APN, address, network time)
    homehub modem at 'AT+...' (--port PATH [--baud N] | --config FILE)
                                       send one raw AT command (after a warning), print the
                                       answer

Exit codes: 0 success, 2 bad input (arguments, configuration, an undecodable value), 1 a
failure at run time (storage, keys). Errors go to stderr as one line that says what was wrong
and where; they never contain reading values or key material.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from agent.errors import ConfigError, DecodeError, HubError, LocalError, UsageError
from agent.logs import scrub_text
from agent.tech import doctor, provision
from agent.tech import factory_reset as tech_factory_reset
from agent.tech import status as tech_status
from agent.tech.arguments import seconds_up_to
from agent.tech.output import json_default

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"homehub: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the CLI tests)."""
    parser = _Parser(prog="homehub", description="Remote patient monitoring hub agent")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    decode = sub.add_parser("decode", help="decode one characteristic value to JSON")
    decode.add_argument("characteristic", help="e.g. 0x2A35, 2a35, sfloat, float")
    decode.add_argument("hex", help="the value as hex, e.g. 067d0055006200")
    decode.add_argument(
        "--from-hub", action="store_true", help="the value is a request the hub writes (RACP)"
    )

    tech_status.add_parser(sub)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)

    sub.add_parser("config-schema", help="print every configuration key")

    tech_factory_reset.add_parser(sub)
    provision.add_parser(sub)
    doctor.add_parser(sub)

    pair = sub.add_parser(
        "pair",
        help="bond a device in pairing mode and add it to the allow-list (stop the daemon"
        " first on a bumble: stack)",
    )
    pair.add_argument("--config", type=Path, required=True)
    pair.add_argument(
        "--scan-s", type=float, default=10.0, help="how long to look for devices (s, <= 120)"
    )
    pair.add_argument("--address", help="pair this address instead of picking a table row")
    pair.add_argument("--label", help="the device's label (default: its kind, made unique)")
    pair.add_argument("--json", action="store_true", help="print the result as JSON")

    devices = sub.add_parser("devices", help="list, rename or remove allow-listed devices")
    devices_sub = devices.add_subparsers(dest="action", required=True, parser_class=_Parser)
    listing = devices_sub.add_parser(
        "list", help="the allow-list with bond, last sync and battery level"
    )
    listing.add_argument("--config", type=Path, required=True)
    listing.add_argument("--json", action="store_true")
    renaming = devices_sub.add_parser(
        "rename", help="relabel a device, keeping its sync state (stop the daemon first)"
    )
    renaming.add_argument("old")
    renaming.add_argument("new")
    renaming.add_argument("--config", type=Path, required=True)
    renaming.add_argument("--json", action="store_true")
    removing = devices_sub.add_parser(
        "remove",
        help="remove a device from the allow-list, delete its bond and sync state"
        " (stop the daemon first)",
    )
    removing.add_argument("label")
    removing.add_argument("--config", type=Path, required=True)
    removing.add_argument("--json", action="store_true")
    verify = sub.add_parser(
        "verify", help="verify a captured envelope (hex, base64 or raw CBOR), print it as JSON"
    )
    verify.add_argument("envelope", type=Path, help="file holding the captured MQTT payload")
    verify.add_argument("--cert", type=Path, required=True, help="the hub's certificate (PEM)")
    verify.add_argument("--ca", type=Path, help="the CA that issued it (PEM): checked when given")
    verify.add_argument(
        "--dictionaries", type=Path, help="directory of zstd dictionaries (default: the hub's)"
    )
    verify.add_argument(
        "--devices-from",
        type=Path,
        action="append",
        default=[],
        metavar="EARLIER_FILE",
        help="an earlier envelope of the same hub that carried the Devices a reading names by"
        " digest (repeatable)",
    )
    _add_modem_parser(sub)
    return parser


def _baud(text: str) -> int:
    """``--baud``: one of the rates a module's UART takes."""
    from agent.modem.serial_port import STANDARD_BAUDRATES

    if not text.isdigit() or int(text) not in STANDARD_BAUDRATES:
        rates = ", ".join(str(rate) for rate in STANDARD_BAUDRATES)
        raise argparse.ArgumentTypeError(f"{text!r} is not a serial rate ({rates})")
    return int(text)


DEFAULT_MODEM_BAUD: Final = 115200


_modem_timeout = seconds_up_to(600)
"""``--timeout-s``: seconds, 0 < S <= 600."""


def _add_modem_parser(sub: Any) -> None:
    modem = sub.add_parser("modem", help="the 5G module: its figures, or one raw AT command")
    modem_sub = modem.add_subparsers(dest="action", required=True, parser_class=_Parser)
    status = modem_sub.add_parser("status", help="identity, SIM, registration, cell and signal")
    at = modem_sub.add_parser("at", help="send one raw AT command and print the answer")
    at.add_argument("at_command", metavar="COMMAND", help="the command line, e.g. 'AT+CSQ'")
    for each in (status, at):
        where = each.add_mutually_exclusive_group(required=True)
        where.add_argument("--port", help="the AT port, e.g. /dev/ttyUSB2")
        where.add_argument(
            "--config", type=Path, help="the daemon's configuration: its [modem] port and baud"
        )
        each.add_argument(
            "--baud", type=_baud, default=None, help="for a UART (default 115200, or [modem]'s)"
        )
        each.add_argument(
            "--timeout-s",
            type=_modem_timeout,
            default=None,
            help="bound on each command's wait (default: the AT manual's figure)",
        )
    status.add_argument("--json", action="store_true", help="the figures as one JSON object")


def _read_input(path: Path, limit: int, what: str) -> bytes:
    """A file's bytes, refused beyond ``limit`` (never read past it)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(what, f"{path}: cannot be read ({exc.strerror})") from None
    if len(data) > limit:
        raise UsageError(what, f"{path}: larger than {limit} bytes")
    return data


def _cmd_verify(args: argparse.Namespace) -> int:
    from agent import dictionaries, verify
    from agent.errors import CryptoError

    data = _read_input(args.envelope, verify.MAX_INPUT_BYTES, "envelope")
    cert = _read_input(args.cert, verify.MAX_CERTIFICATE_BYTES, "--cert")
    ca = _read_input(args.ca, verify.MAX_CERTIFICATE_BYTES, "--ca") if args.ca else None
    if len(args.devices_from) > verify.MAX_DEVICES_FROM:
        raise UsageError("--devices-from", f"at most {verify.MAX_DEVICES_FROM} files")
    earlier = [
        _read_input(path, verify.MAX_INPUT_BYTES, "--devices-from") for path in args.devices_from
    ]
    try:
        loaded = dictionaries.load(args.dictionaries or dictionaries.PACKAGE_DIR)
        result = verify.verify_envelope(
            data, cert, ca_pem=ca, dictionaries=loaded, devices_from=earlier
        )
    except CryptoError as exc:
        sys.stderr.write(f"homehub: verify: {exc}\n")
        return EXIT_BAD_INPUT
    sys.stdout.write(result.to_json() + "\n")
    return EXIT_OK


def _cmd_decode(args: argparse.Namespace) -> int:
    from drivers import registry

    characteristic = registry.parse_characteristic(args.characteristic)
    data = registry.parse_hex(args.hex)
    result = registry.decode(characteristic, data, from_hub=args.from_hub)
    sys.stdout.write(json.dumps(result, default=json_default) + "\n")
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from agent import config

    cfg = config.load(args.config)
    sys.stdout.write(f"{cfg.source}: ok ({len(cfg.devices)} device(s))\n")
    return EXIT_OK


def _cmd_config_schema(_args: argparse.Namespace) -> int:
    from agent import config

    sys.stdout.write("\n".join(config.schema_lines()) + "\n")
    return EXIT_OK


def _cmd_pair(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import asdict

    from agent import config, logs, pairing
    from agent.terminal_prompts import TerminalPrompter

    cfg = config.load(args.config)
    logs.configure("warning")  # the technician reads the table and the questions, not logs
    prompter = TerminalPrompter()
    out = sys.stderr if args.json else sys.stdout

    def show(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    try:
        result = asyncio.run(
            pairing.pair(
                cfg,
                prompter,
                prompter,
                scan_s=args.scan_s,
                address=args.address,
                label=args.label,
                show=show,
            )
        )
    except KeyboardInterrupt:
        sys.stderr.write("homehub: pairing interrupted; nothing was added\n")
        return EXIT_FAILURE
    if args.json:
        sys.stdout.write(json.dumps(asdict(result)) + "\n")
    else:
        sys.stdout.write(
            f"paired {result.device} ({result.kind}, {result.method.replace('_', ' ')})"
            f" as '{result.label}'; added to {result.config}\n"
        )
    return EXIT_OK


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _cmd_devices(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import asdict

    from agent import config, devices, logs

    cfg = config.load(args.config)
    logs.configure("warning")  # on stderr: stdout is for the data
    if args.action == "list":
        rows = asyncio.run(devices.list_devices(cfg))
        if args.json:
            sys.stdout.write(json.dumps([asdict(r) for r in rows]) + "\n")
            return EXIT_OK
        lines = [("label", "kind", "address", "pairing", "bonded", "last sync", "battery")]
        for r in rows:
            bonded = "?" if r.bonded is None else ("yes" if r.bonded else "no")
            battery = "-" if r.battery_percent is None else f"{r.battery_percent} %"
            lines.append(
                (r.label, r.kind, r.device, r.pairing, bonded, _age(r.last_sync_age_s), battery)
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for line in lines:
            text = "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True))
            sys.stdout.write(text.rstrip() + "\n")
        return EXIT_OK
    if args.action == "rename":
        device = devices.rename(cfg, args.old, args.new)
        if args.json:
            sys.stdout.write(json.dumps({"renamed": args.old, "label": device.label}) + "\n")
        else:
            sys.stdout.write(f"renamed '{args.old}' to '{device.label}'\n")
        return EXIT_OK
    removed, bond_deleted = asyncio.run(devices.remove_and_forget(cfg, args.label))
    if args.json:
        sys.stdout.write(
            json.dumps({"removed": removed.label, "bond_deleted": bond_deleted}) + "\n"
        )
    else:
        bond = "its bond deleted" if bond_deleted else "no bond was stored"
        sys.stdout.write(f"removed '{removed.label}' from the allow-list; {bond}\n")
    return EXIT_OK


def _modem_port(path: str) -> str:
    """``--port``: an existing character device (a tty), else a usage error naming it."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UsageError("--port", f"{path}: no such port (is the module plugged in?)") from None
    if not stat.S_ISCHR(mode):
        raise UsageError("--port", f"{path}: not a serial port (not a character device)")
    return path


def _modem_port_of(args: argparse.Namespace) -> tuple[str, int]:
    """The port and baud rate: ``--port`` (and ``--baud``), or the ``[modem]`` section of
    ``--config``; a hub configured without a modem is told so."""
    if args.port is not None:
        return _modem_port(args.port), args.baud or DEFAULT_MODEM_BAUD
    from agent import config

    modem = config.load(args.config).modem
    if modem.backend == "none" or modem.port is None:
        raise UsageError(
            "--config",
            f'{args.config}: no modem configured ([modem] backend = "none": the hub uses'
            " Ethernet or Wi-Fi); give --port to ask a module anyway",
        )
    return _modem_port(modem.port), args.baud or modem.baudrate


def _cmd_modem(args: argparse.Namespace) -> int:
    import asyncio

    from agent import logs

    port, baudrate = _modem_port_of(args)
    logs.configure("warning")  # stdout is for the figures; nothing identifying is logged
    from agent.modem.modemmanager import check_at_port

    # ModemManager probing the same port would garble both: say so, with the fix (exit 2).
    asyncio.run(check_at_port(port))
    if args.action == "status":
        from agent.modem.manager import read_status

        figures = asyncio.run(read_status(port, baudrate=baudrate, timeout_cap_s=args.timeout_s))
        # IMEI and ICCID go to the technician's terminal, who asked for them; never to a log.
        sys.stdout.write((figures.to_json() if args.json else figures.text_table()) + "\n")
        return EXIT_OK
    from drivers.modem.at_codec import DEFAULT_TIMEOUT_S, AtCommand

    command = AtCommand.of(args.at_command, timeout_s=args.timeout_s or DEFAULT_TIMEOUT_S)
    sys.stderr.write(
        "homehub: warning: the command goes to the modem as typed; it can change the module's"
        " settings and drop the hub's link (stop the daemon first: it holds the port)\n"
    )
    response = asyncio.run(_send_raw(port, baudrate, command))
    for line in response.lines:
        sys.stdout.write(line + "\n")
    final = response.final
    code = final.code if final.code is not None else final.text
    sys.stdout.write(final.kind.value + (f": {code}" if code is not None else "") + "\n")
    return EXIT_OK if response.ok else EXIT_FAILURE


async def _send_raw(port: str, baudrate: int, command: Any) -> Any:
    from agent.modem.serial_port import AtPort

    async with AtPort(port, baudrate=baudrate) as at_port:
        return await at_port.command(command)


def _cmd_run(args: argparse.Namespace) -> int:
    from agent import config, logs

    cfg = config.load(args.config)  # a bad file is reported on stderr before logging starts
    from agent import daemon  # after: a bad file is refused without loading the BLE stacks

    logs.configure(args.log_level)
    logs.protect([cfg.patient.id])  # no telltale form: redacted wherever a line carries it
    return daemon.main(cfg)


_COMMANDS = {
    "run": _cmd_run,
    "decode": _cmd_decode,
    "status": tech_status.run,
    "check-config": _cmd_check_config,
    "config-schema": _cmd_config_schema,
    "factory-reset": tech_factory_reset.run,
    "provision": provision.run,
    "doctor": doctor.run,
    "pair": _cmd_pair,
    "devices": _cmd_devices,
    "verify": _cmd_verify,
    "modem": _cmd_modem,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``homehub`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except DecodeError as exc:
        sys.stderr.write(f"homehub: invalid {exc.characteristic} value: {exc.reason}")
        sys.stderr.write(f" (at byte {exc.offset})\n" if exc.offset is not None else "\n")
        return EXIT_BAD_INPUT
    except (ConfigError, UsageError, LocalError) as exc:
        sys.stderr.write(f"homehub: {scrub_text(str(exc))}\n")
        return EXIT_BAD_INPUT
    except HubError as exc:
        sys.stderr.write(f"homehub: {type(exc).__name__}: {scrub_text(str(exc))}\n")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
