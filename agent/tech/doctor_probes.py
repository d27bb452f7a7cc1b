"""``homehub doctor``'s checks of what lies on this hub: key files, certificates, the key
provider, the state and outbox directories, disk space, the unit's hardening, the daemon.

Each check is a function of the :class:`Context` returning one result or a list (the key
files give one line per file); the judgement is agent/tech/doctor_rules.py's. Files are read
with a size bound. The plain functions do blocking work (file system, the PKCS#11 module):
the runner calls them on a daemon thread, so a hung token or filesystem costs the check's
timeout, not the run. The subprocesses (``systemd-analyze``, ``systemctl show``) are
``async``, bounded and killed past their bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pwd
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent import keys
from agent.config import Config
from agent.cose import load_signing_key
from agent.errors import KeyMaterialError
from agent.instance_lock import LOCK_FILE
from agent.keys.credstore import CREDSTORE_DIRS, encrypted_credentials
from agent.tech import doctor_rules as rules
from agent.tech.doctor_report import CheckResult, Outcome

MAX_PEM_BYTES: Final = 256 * 1024
"""A CA bundle is a few certificates; Debian's whole bundle is ~220 KiB."""
MAX_ANALYZE_OUTPUT: Final = 1024 * 1024
INSTALLED_UNITS: Final = (
    Path("/etc/systemd/system/homehub.service"),
    Path("/lib/systemd/system/homehub.service"),
    Path("/usr/lib/systemd/system/homehub.service"),
)
_T = TypeVar("_T")

REPO_UNIT: Final = Path(__file__).resolve().parents[2] / "systemd" / "homehub.service"
PROVISION_FIX: Final = "homehub provision (it creates the hub's keys and certificate)"
ROTATE_FIX: Final = "rotate the hub's certificate (homehub provision, or the platform's rotation)"
SIGNING_FIX: Final = (
    "homehub provision apply --signing-cert PEM (the depot's CA issues it for the hub's"
    " <hub>-signing.csr; docs/provisioning.md, PKCS#11)"
)
RESET_FIX: Final = (
    "restore it from the hub's backup, or start over with `homehub factory-reset --yes`"
)


@dataclass(frozen=True, slots=True)
class Context:
    """What every check may use.

    Attributes:
        cfg: the loaded configuration.
        daemon_pid: the pid holding the hub's lock (0: held, pid unreadable), or ``None``.
        now: the hub's clock at the start of the run (UTC).
        unit: the unit file to rate, when given with ``--unit``.
    """

    cfg: Config
    daemon_pid: int | None
    now: dt.datetime
    unit: Path | None = None


async def off_loop(work: Callable[[], _T], name: str) -> _T:
    """``work()`` on a daemon thread: a caller's timeout ends the wait even when it hangs (a
    PKCS#11 module, a dead filesystem, a FIFO where a file should be), and the process can
    still exit (a daemon thread is not joined at exit, as an executor's threads are)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: tuple[_T, None] | tuple[None, BaseException]) -> None:
        if done.done():
            return  # the caller gave up on it
        result, error = outcome
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast(_T, result))

    def run() -> None:
        outcome: tuple[_T, None] | tuple[None, BaseException]
        try:
            outcome = (work(), None)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, which reports it
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done


def _facts(path: Path) -> rules.FileFacts | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return rules.FileFacts(st.st_mode, st.st_uid)


def key_owners() -> frozenset[int]:
    """Who may own a key file: this user, root, and (run as root) the service's user."""
    owners = {os.geteuid(), 0}
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            owners.add(pwd.getpwnam(rules.SERVICE_USER).pw_uid)
    return frozenset(owners)


def _key_file(
    check: str, path: Path, *, missing_ok: str | None, missing_fix: str, missing: str = ""
) -> CheckResult:
    """One key file: ``missing_ok`` is the finding when its absence is fine (created at first
    start), else its absence fails with ``missing`` and ``missing_fix``."""
    facts = _facts(path)
    judged = rules.key_file_result(check, path, facts, key_owners())
    if judged is not None:
        return judged
    if missing_ok is not None:
        return CheckResult.passed(check, missing_ok)
    return CheckResult.failed(check, missing or f"{path} is missing", missing_fix)


def key_files(ctx: Context) -> list[CheckResult]:
    """The outbox's data key, the KEK file, the signing key, the TLS client key and the PIN
    files: present when needed, private."""
    cfg = ctx.cfg
    data_key = cfg.outbox.key_file
    outbox_exists = cfg.outbox.path.exists()
    results = [
        _key_file(
            "key file: data key",
            data_key,
            missing_ok=None if outbox_exists else "not created yet: the daemon makes it at start",
            missing=f"{data_key} is missing, but the outbox holds records sealed under it",
            missing_fix=RESET_FIX,
        )
    ]
    if cfg.keys.provider == "file":
        results.append(_kek_file(cfg))
        signing = _key_file(
            "key file: signing key",
            cfg.signing.key_file,
            missing_ok=None,
            missing_fix=PROVISION_FIX,
        )
        if signing.outcome is Outcome.PASS:
            try:
                load_signing_key(cfg.signing.key_file)
            except KeyMaterialError as exc:
                signing = CheckResult.failed(signing.check, exc.reason, PROVISION_FIX)
        results.append(signing)
    else:
        results.append(
            CheckResult.skipped("key file: signing key", "in the PKCS#11 token (key provider)")
        )
        assert cfg.keys.pkcs11_pin_file is not None  # enforced by agent.config
        results.append(
            _key_file(
                "key file: token PIN",
                cfg.keys.pkcs11_pin_file,
                missing_ok=None,
                missing_fix=f"write the token's user PIN to {cfg.keys.pkcs11_pin_file} (0600)",
            )
        )
    results.append(
        _key_file(
            "key file: TLS client key",
            cfg.mqtt.key_file,
            missing_ok=None,
            missing_fix=PROVISION_FIX,
        )
    )
    if cfg.modem.pin_file is not None:
        results.append(
            _key_file(
                "key file: SIM PIN",
                cfg.modem.pin_file,
                missing_ok=None,
                missing_fix=f"write the SIM's PIN to {cfg.modem.pin_file} (mode 0600)",
            )
        )
    return results


def _kek_file(cfg: Config) -> CheckResult:
    check = "key file: KEK"
    name = cfg.keys.kek_credential
    if name is not None:
        found = encrypted_credentials(name, CREDSTORE_DIRS)
        if found:
            return CheckResult.passed(
                check, f"systemd credential {name!r}: {found[0]} (only the unit can open it)"
            )
        return CheckResult.failed(
            check,
            f"no encrypted credential {name!r} in {', '.join(map(str, CREDSTORE_DIRS))}",
            f"create it: head -c 32 /dev/urandom | systemd-creds encrypt --name={name}"
            f" --with-key=auto - /etc/credstore.encrypted/{name} (docs/install.md)",
        )
    if cfg.keys.kek_file is None:
        return CheckResult.skipped(check, "no KEK configured: the data key file is stored plain")
    try:
        keys.kek_path(cfg)
    except KeyMaterialError as exc:
        return CheckResult.failed(
            check, exc.reason, "move the KEK out of the state directory ([keys] kek_file)"
        )
    data_key = cfg.outbox.key_file.exists()
    return _key_file(
        check,
        cfg.keys.kek_file,
        missing_ok=None if data_key else "not created yet: the daemon makes it at start",
        missing=f"{cfg.keys.kek_file} is missing: the data key cannot be unwrapped",
        missing_fix=RESET_FIX,
    )


# ---------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------


def _read_pem(path: Path) -> bytes:
    """The file's bytes, at most :data:`MAX_PEM_BYTES`; ``OSError``/``ValueError`` else."""
    with path.open("rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"larger than {MAX_PEM_BYTES} bytes")
    return data


def _certificate(
    check: str, path: Path, now: dt.datetime, fix: str, *, rotated_here: bool = False
) -> tuple[CheckResult, list[x509.Certificate]]:
    try:
        certs = x509.load_pem_x509_certificates(_read_pem(path))
    except OSError as exc:
        return CheckResult.failed(check, f"{path} cannot be read ({exc.strerror})", fix), []
    except ValueError:
        return CheckResult.failed(check, f"{path} holds no PEM certificate", fix), []
    # A bundle is as good as its certificate that expires first.
    first = min(certs, key=lambda c: c.not_valid_after_utc)
    latest_start = max(c.not_valid_before_utc for c in certs)
    result = rules.certificate_result(
        check,
        path,
        latest_start,
        first.not_valid_after_utc,
        now,
        fix=fix,
        rotated_here=rotated_here,
    )
    return result, certs


def certificates(ctx: Context) -> list[CheckResult]:
    """The hub's TLS certificate (valid, its CN the hub id, the key's), the broker's CA and
    the platform's certificates when configured."""
    cfg = ctx.cfg
    client, certs = _certificate(
        "certificate: TLS client", cfg.mqtt.cert_file, ctx.now, ROTATE_FIX, rotated_here=True
    )
    if certs:  # a wrong certificate matters before when it ends
        client = _client_identity(client, cfg, certs[0])
    results = [client]
    if cfg.signing.cert_file is not None:  # a token's signing key has its own certificate
        signing, signed = _certificate(
            "certificate: signing", cfg.signing.cert_file, ctx.now, SIGNING_FIX, rotated_here=True
        )
        if signed:
            signing = _names_this_hub(signing, cfg, cfg.signing.cert_file, signed[0])
        results.append(signing)
    ca_fix = f"install the platform's current CA certificate as {cfg.mqtt.ca_file}"
    results.append(_certificate("certificate: broker CA", cfg.mqtt.ca_file, ctx.now, ca_fix)[0])
    for check, path in (
        ("certificate: platform", cfg.platform.cert_file),
        ("certificate: client CA", cfg.platform.client_ca_file),
    ):
        if path is not None:
            fix = f"install the platform's current certificate as {path}"
            results.append(_certificate(check, path, ctx.now, fix)[0])
    return results


def _names_this_hub(
    judged: CheckResult, cfg: Config, path: Path, cert: x509.Certificate
) -> CheckResult:
    """A failure when ``cert`` (read from ``path``) is not issued to this hub, else
    ``judged`` (its validity)."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else None
    if cn != cfg.hub.id:
        return CheckResult.failed(
            judged.check,
            f"{path} is issued to {cn!r}, not to this hub ({cfg.hub.id!r})",
            SIGNING_FIX,
        )
    return judged


def _client_identity(judged: CheckResult, cfg: Config, cert: x509.Certificate) -> CheckResult:
    """A failure when the client certificate does not name this hub or is not the TLS key's,
    else ``judged`` (its validity)."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else None
    if cn != cfg.hub.id:
        return CheckResult.failed(
            judged.check,
            f"{cfg.mqtt.cert_file} is issued to {cn!r}, not to this hub ({cfg.hub.id!r})",
            PROVISION_FIX,
        )
    try:
        data = _read_pem(cfg.mqtt.key_file)
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError):
        return judged  # the key file's own check says what is wrong with it
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        return CheckResult.failed(
            judged.check,
            f"{cfg.mqtt.cert_file} is not the certificate of {cfg.mqtt.key_file}",
            PROVISION_FIX,
        )
    return judged


# ---------------------------------------------------------------------------
# The key provider
# ---------------------------------------------------------------------------


def key_provider(ctx: Context) -> CheckResult:
    """The provider opens (pkcs11: the module loads, the token opens with the PIN), holds the
    KEK when a wrapped data key needs it, and (pkcs11) the signing key."""
    cfg = ctx.cfg
    check = f"key provider ({cfg.keys.provider})"
    provider_fix = (
        "check [keys] pkcs11_module, pkcs11_token and the PIN file (softhsm2-util"
        " --show-slots, or the TPM's tools)"
    )
    if cfg.keys.kek_credential is not None and not os.environ.get(keys.CREDENTIALS_ENV):
        return CheckResult.skipped(
            check, "the KEK is a systemd credential: only the unit can open it (key file: KEK)"
        )
    try:
        provider = keys.open_provider(cfg)
    except KeyMaterialError as exc:
        fix = provider_fix if cfg.keys.provider == "pkcs11" else "see the key file checks"
        return CheckResult.failed(check, str(exc), fix)
    try:
        has_kek = provider.has_kek()
        signing = "signing key present"
        if cfg.keys.provider == "pkcs11":
            try:
                provider.public_key()
            except KeyMaterialError:
                return CheckResult.failed(check, "the token holds no signing key", PROVISION_FIX)
    finally:
        provider.close()
    needs_kek = cfg.keys.provider == "pkcs11" or cfg.keys.kek_file is not None
    if needs_kek and not has_kek and cfg.outbox.key_file.exists():
        return CheckResult.failed(
            check, "no KEK, but a wrapped data key exists: the outbox cannot be opened", RESET_FIX
        )
    kek = "KEK present" if has_kek else "no KEK yet (made at the daemon's first start)"
    if cfg.keys.provider == "file":
        return CheckResult.passed(check, kek)
    return CheckResult.passed(check, f"token {cfg.keys.pkcs11_token!r} opened, {kek}, {signing}")


# ---------------------------------------------------------------------------
# Directories and disk space
# ---------------------------------------------------------------------------


def directory_result(check: str, path: Path) -> CheckResult:
    """``path`` exists, is a directory and this user can create and remove a file in it."""
    recreate = (
        f"systemd-tmpfiles --create, or mkdir -m 700 {path} && chown {rules.SERVICE_USER}: {path}"
    )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return CheckResult.failed(check, f"{path} does not exist", recreate)
    if not stat.S_ISDIR(st.st_mode):
        return CheckResult.failed(
            check,
            f"{path} is not a directory (the daemon waits, retrying every 5 s)",
            f"move the file at {path} aside, then: {recreate}",
        )
    try:
        fd, name = tempfile.mkstemp(dir=path, prefix=".doctor-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return CheckResult.failed(
            check,
            f"{path} is not writable ({exc.strerror}; the daemon waits, retrying every 5 s)",
            f"chown {rules.SERVICE_USER}: {path}; chmod 700 {path}; if the filesystem is"
            f" read-only (findmnt -T {path}), remount it read-write or replace the SD card",
        )
    return CheckResult.passed(check, f"{path}: a writable directory")


def directories(ctx: Context) -> list[CheckResult]:
    """The state directory and, when elsewhere, the outbox's directory."""
    state = ctx.cfg.hub.state_dir
    results = [directory_result("state directory", state)]
    outbox_dir = ctx.cfg.outbox.path.parent
    if outbox_dir.resolve() != state.resolve():
        results.append(directory_result("outbox directory", outbox_dir))
    return results


def disk_space(ctx: Context) -> CheckResult:
    """Free space on the outbox's filesystem for the outbox to reach its quota."""
    outbox = ctx.cfg.outbox.path
    where = outbox.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    size = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            size += outbox.with_name(outbox.name + suffix).stat().st_size
    free = shutil.disk_usage(where).free
    return rules.disk_result(where, free, ctx.cfg.outbox.quota_bytes, size)


# ---------------------------------------------------------------------------
# The unit and the daemon
# ---------------------------------------------------------------------------


def unit_to_rate(given: Path | None) -> tuple[Path, str] | None:
    """The unit file to rate and which it is: given, installed, or the source tree's."""
    if given is not None:
        return given, "given"
    for path in INSTALLED_UNITS:
        if path.is_file():
            return path, "installed"
    if REPO_UNIT.is_file():
        return REPO_UNIT, "not installed: the source tree's"
    return None


async def unit_hardening(ctx: Context) -> CheckResult:
    """``systemd-analyze security --offline=true`` of the unit, at most 1.5."""
    check = "unit hardening"
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return CheckResult.skipped(check, "systemd-analyze is not installed (package systemd)")
    chosen = unit_to_rate(ctx.unit)
    if chosen is None:
        return CheckResult.skipped(check, "no homehub.service installed or in a source tree")
    unit, which = chosen
    if not unit.is_file():
        return CheckResult.failed(check, f"{unit} is not a file", "give the unit file's path")
    process = await asyncio.create_subprocess_exec(
        exe,
        "security",
        "--offline=true",
        "--no-pager",
        str(unit),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        output = b""
        while len(output) <= MAX_ANALYZE_OUTPUT:  # read() returns what has arrived so far
            chunk = await process.stdout.read(MAX_ANALYZE_OUTPUT)
            if not chunk:
                break
            output += chunk
        await process.wait()
    finally:
        if process.returncode is None:  # cancelled by the runner's timeout
            process.kill()
            await process.wait()
    return rules.unit_result(unit, which, rules.exposure_of(output.decode(errors="replace")))


async def daemon(ctx: Context) -> CheckResult:
    """Informational: whether ``homehub run`` holds the hub's lock, and, under systemd,
    what the unit says (its ``STATUS=``: a daemon waiting for its storage holds no lock and
    says why there)."""
    lock = ctx.cfg.hub.state_dir / LOCK_FILE
    unit = await _systemd_unit()
    said = f"; systemd: {unit}" if unit else ""
    if ctx.daemon_pid is None:
        return CheckResult.passed("daemon", f"not running (nobody holds {lock}){said}")
    pid = "pid unknown" if ctx.daemon_pid == 0 else f"pid {ctx.daemon_pid}"
    return CheckResult.passed(
        "daemon", f"running ({pid}): the modem is read from the daemon's figures{said}"
    )


SYSTEMD_RUNTIME: Final = Path("/run/systemd/system")
"""Exists when systemd is the running init (sd_booted)."""
SYSTEMCTL_TIMEOUT_S: Final = 5.0
MAX_SYSTEMCTL_OUTPUT: Final = 64 * 1024


async def _systemd_unit() -> str | None:
    """``homehub.service``'s state and status text as systemd holds them, or ``None`` where
    systemd does not run the machine or cannot be asked in time."""
    exe = shutil.which("systemctl")
    if exe is None or not SYSTEMD_RUNTIME.is_dir():
        return None
    process = await asyncio.create_subprocess_exec(
        exe,
        "show",
        "--property=ActiveState,SubState,StatusText",
        "homehub.service",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(SYSTEMCTL_TIMEOUT_S):
            assert process.stdout is not None
            output = await process.stdout.read(MAX_SYSTEMCTL_OUTPUT)
            await process.wait()
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return rules.systemd_unit_summary(output.decode(errors="replace"))
