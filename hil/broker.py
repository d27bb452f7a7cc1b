"""A real mosquitto on loopback, over TLS with client certificates, for tests and the demo.

:class:`Broker` writes a mosquitto configuration for one run and manages the process:

- one listener on ``127.0.0.1:<free port>`` with TLS ≥ 1.2, ``require_certificate true`` and
  ``use_identity_as_username true``, so the username every ACL check sees is the CN of the
  client certificate;
- an ACL file: a hub may only publish its readings, replies, status and events below
  ``homehub/v1/<its CN>/`` and read its receipts and commands there; the receiver
  (``platform-receiver``) reads every hub's readings, replies, status and events and writes
  receipts and commands;
- persistence off by default (the broker then forgets sessions and queued messages on every
  stop), on with ``persistence=True`` (written on a graceful stop; mosquitto's autosave is every
  1800 s, so a SIGKILL still loses what it had acknowledged: reliability finding 1);
- ``set_tcp_nodelay true``: without it each PUBACK waits behind TCP's delayed ACK;
- optionally ``message_size_limit``: a larger publish is answered (MQTT 5, QoS 1) with PUBACK
  0x83 "implementation specific error" and not forwarded: a platform refusing one record;
- the broker's log (stderr) goes to ``<run_dir>/mosquitto.log`` (or ``log_path``).

Root and non-root: started as root, mosquitto drops privileges to the user named in ``user``
*before* it opens its certificates, key, ACL and persistence file, so those must be readable by
that user and sit in directories it can traverse. A test runner's temporary directories are
0700 and owned by root, so the broker gets its own *state directory*: created under the system
temporary directory (mode 0700) and chowned, with the copies of the key and certificates in it,
to the ``mosquitto`` user (``nobody`` when that user does not exist, which is what mosquitto
itself would pick). Nothing else is loosened. As non-root, mosquitto keeps our uid and the state
directory is ``<run_dir>/mosquitto-state``. The configuration file is read before the drop and
the log is our file descriptor, so both stay in ``run_dir``.

Readiness is a completed TLS handshake with a valid client certificate, polled with a short
backoff under a deadline; the port is chosen free on the first start and kept on restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import structlog

from hil.pki import RECEIVER_CN, DevPki

_log = structlog.get_logger(__name__)

READY_TIMEOUT_S: Final = 10.0
"""mosquitto listens within ~20 ms of exec on a laptop; 10 s covers a loaded CI runner."""

STOP_TIMEOUT_S: Final = 10.0
"""Grace after SIGTERM before SIGKILL: a graceful stop also writes the persistence file."""

PROBE_TIMEOUT_S: Final = 1.0
"""One readiness probe (TCP connect + TLS handshake on loopback); well under READY_TIMEOUT_S."""

_PROBE_BACKOFF_S: Final = (0.005, 0.2)
"""First and largest pause between readiness probes (doubling)."""

_START_ATTEMPTS: Final = 3
"""A port found free can be taken before mosquitto binds it; pick another this many times."""

_LOG_TAIL_BYTES: Final = 2000


class BrokerError(RuntimeError):
    """mosquitto did not start or did not become ready.

    Attributes:
        reason: what went wrong.
        log_tail: the end of mosquitto's log, for the test report.
    """

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"mosquitto: {reason}\n--- log tail ---\n{log_tail}")


def mosquitto_executable() -> str:
    """Path of the mosquitto binary: /usr/sbin/mosquitto, else the one on PATH."""
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    found = shutil.which("mosquitto")
    if found is None:
        raise BrokerError("mosquitto not found (make system-deps installs it)", "")
    return found


class Broker:
    """One mosquitto process with a generated TLS + ACL configuration (see the module doc).

    Synchronous methods block for at most READY_TIMEOUT_S / STOP_TIMEOUT_S; the ``a``-prefixed
    ones run them off the event loop for async callers (tests, hil/demo.py).
    """

    def __init__(
        self,
        pki: DevPki,
        run_dir: Path,
        *,
        persistence: bool = False,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        message_size_limit: int | None = None,
        acl_text: str | None = None,
        extra_config: Sequence[str] = (),
        server_identity: tuple[Path, Path] | None = None,
    ) -> None:
        """``message_size_limit``: mosquitto's option of that name (payload bytes), unset when
        None. ``acl_text``: the ACL file's text instead of the default ACL (hil/broker_profiles.py
        writes one per uplink profile). ``extra_config``: mosquitto lines appended after the
        listener's (listener options such as ``max_qos``, or global ones). ``server_identity``:
        (certificate, key) the listener serves instead of the PKI's broker certificate, for TLS
        negative tests (an expired one, one for another host, one of another CA); the readiness
        probe then checks only that a handshake completes, not the chain."""
        if message_size_limit is not None and message_size_limit < 1:
            raise ValueError("message_size_limit must be >= 1")
        self.pki = pki
        self.message_size_limit = message_size_limit
        self.acl_text = acl_text
        self.extra_config = tuple(extra_config)
        self.server_identity = server_identity
        self.run_dir = run_dir
        self.persistence = persistence
        self.host = host
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self.log_path = log_path or run_dir / "mosquitto.log"
        self.config_path = run_dir / "mosquitto.conf"

    # -- properties ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listener's port (known after the first :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("broker not started yet: no port chosen")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The mosquitto process id, while running."""
        return self._proc.pid if self.running and self._proc is not None else None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start mosquitto and return once it completes a TLS handshake; BrokerError if not."""
        if self.running:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_state_dir()
        choose_port = self._port is None
        for attempt in range(1, _START_ATTEMPTS + 1):
            if choose_port:
                self._port = _free_port(self.host)
            self._write_config()
            self._spawn()
            try:
                self._wait_ready()
            except BrokerError as exc:
                self._reap()
                in_use = "address already in use" in exc.log_tail.lower()
                if choose_port and in_use and attempt < _START_ATTEMPTS:
                    continue
                raise
            _log.info("broker_started", port=self._port, pid=self.pid, attempt=attempt)
            return

    def stop(self) -> None:
        """Graceful stop: SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a test may have frozen it (SIGSTOP)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _log.warning("broker_stop_timeout", port=self._port)
                proc.kill()
                proc.wait()
        _log.info("broker_stopped", port=self._port, returncode=proc.returncode)
        self._reap()

    def kill(self) -> None:
        """Crash the broker: SIGKILL (nothing is persisted that was not already on disk)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _log.info("broker_killed", port=self._port)
        self._reap()

    def restart(self, *, forget: bool = False) -> None:
        """Graceful stop, then start again on the same port.

        ``forget``: delete the persistence file between the two, so a persistent broker comes
        back without the sessions and queued messages it wrote on the stop (a platform broker
        replaced by a fresh node); without persistence there is nothing to forget.
        """
        self.stop()
        if forget:
            self.persistence_file.unlink(missing_ok=True)
        self.start()

    @property
    def persistence_file(self) -> Path:
        """Where mosquitto writes its persistence (sessions, queued and retained messages)."""
        if self._state_dir is None:
            raise RuntimeError("broker not started yet: no state directory")
        return self._state_dir / "mosquitto.db"

    def close(self) -> None:
        """Stop and remove the state directory if this broker created it."""
        self.stop()
        if self._owns_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
            self._owns_state_dir = False

    async def astart(self) -> None:
        """:meth:`start` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    async def akill(self) -> None:
        """:meth:`kill` without blocking the event loop."""
        await asyncio.to_thread(self.kill)

    async def arestart(self, *, forget: bool = False) -> None:
        """:meth:`restart` without blocking the event loop."""
        await asyncio.to_thread(self.restart, forget=forget)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self) -> str:
        """The last ~2 kB of the broker's log."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- internals ----------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        """Directory with what mosquitto opens after dropping privileges (see module doc)."""
        if self._state_dir is not None:
            return
        owner = _drop_user()
        if owner is None:
            state = self.run_dir / "mosquitto-state"
            state.mkdir(mode=0o700, exist_ok=True)
        else:
            state = Path(tempfile.mkdtemp(prefix="homehub-mosquitto-"))
            self._owns_state_dir = True
        server_cert, server_key = self.server_identity or (
            self.pki.server_cert,
            self.pki.server_key,
        )
        for src, name in (
            (self.pki.ca_cert, "ca.crt"),
            (server_cert, "server.crt"),
            (server_key, "server.key"),
        ):
            shutil.copyfile(src, state / name)
        os.chmod(state / "server.key", 0o600)
        (state / "acl").write_text(self.acl_text if self.acl_text is not None else _acl_text())
        if owner is not None:
            _, uid, gid = owner
            for path in (state, *state.iterdir()):
                os.chown(path, uid, gid)
        self._state_dir = state

    def _write_config(self) -> None:
        assert self._state_dir is not None
        state = self._state_dir
        owner = _drop_user()
        lines = [
            "# Generated by hil/broker.py for one run; see that module's docstring.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"acl_file {state / 'acl'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {state}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if owner is not None:
            lines.append(f"user {owner[0]}")
        lines += [
            f"listener {self._port} {self.host}",
            f"cafile {state / 'ca.crt'}",
            f"certfile {state / 'server.crt'}",
            f"keyfile {state / 'server.key'}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            # Without it, Nagle holds each PUBACK behind the delayed ACK: measured 680 msg/s
            # with 20 in flight on loopback, 7000+ with it. A platform broker wants it too.
            "set_tcp_nodelay true",
            # mosquitto's default (1000) silently drops QoS 1 messages queued for a
            # subscriber that is behind (the receiver verifies each signature): a platform
            # broker must never do that, and neither may ours, or a test blames the hub.
            "max_queued_messages 1000000",
        ]
        if self.message_size_limit is not None:
            lines.append(f"message_size_limit {self.message_size_limit}")
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [mosquitto_executable(), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            start_new_session=True,  # a Ctrl-C aimed at the test runner does not reach it
        )

    def _wait_ready(self) -> None:
        ctx = _probe_context(self.pki, verify=self.server_identity is None)
        deadline = time.monotonic() + READY_TIMEOUT_S
        pause = _PROBE_BACKOFF_S[0]
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerError(f"exited with status {self._proc.returncode}", self.log_tail())
            if _tls_probe(ctx, self.host, self.port):
                return
            if time.monotonic() + pause > deadline:
                raise BrokerError(f"not ready within {READY_TIMEOUT_S} s", self.log_tail())
            time.sleep(pause)  # polling an external process; nothing to await
            pause = min(pause * 2, _PROBE_BACKOFF_S[1])

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _acl_text() -> str:
    return (
        "# Each hub (username = CN of its client certificate) publishes only below its own id,\n"
        "# the messages docs/platform-protocol.md sends hub -> platform, and reads what the\n"
        "# platform sends it. mosquitto refuses %u substitution for names containing + or #\n"
        "# (CVE-2017-7650).\n"
        "pattern write homehub/v1/%u/readings\n"
        "pattern write homehub/v1/%u/replies\n"
        "pattern write homehub/v1/%u/status\n"
        "pattern write homehub/v1/%u/events\n"
        "pattern read homehub/v1/%u/receipts\n"
        "pattern read homehub/v1/%u/commands\n"
        "\n"
        "# The platform receiver reads every hub's messages (also through a shared subscription,\n"
        "# $share/<group>/...) and publishes receipts and commands to any hub.\n"
        f"user {RECEIVER_CN}\n"
        "topic read homehub/v1/+/readings\n"
        "topic read homehub/v1/+/replies\n"
        "topic read homehub/v1/+/status\n"
        "topic read homehub/v1/+/events\n"
        "topic write homehub/v1/+/receipts\n"
        "topic write homehub/v1/+/commands\n"
        f"topic deny homehub/v1/{RECEIVER_CN}/#\n"
    )


def _drop_user() -> tuple[str, int, int] | None:
    """(name, uid, gid) mosquitto switches to when started by us as root; None if not root."""
    if os.geteuid() != 0:
        return None
    for name in ("mosquitto", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return name, pw.pw_uid, pw.pw_gid
    raise BrokerError("running as root but neither user 'mosquitto' nor 'nobody' exists", "")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _probe_context(pki: DevPki, *, verify: bool = True) -> ssl.SSLContext:
    """Chain verified (unless ``verify`` is false: a broker serving a deliberately bad
    certificate), host name not: the probe asks 'is it up', clients check identity."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    ctx.check_hostname = False
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.receiver_cert, pki.receiver_key)
    return ctx


def _tls_probe(ctx: ssl.SSLContext, host: str, port: int) -> bool:
    """Whether a TCP connect and TLS handshake to the listener succeed."""
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            pass
    except (OSError, ssl.SSLError):
        return False
    return True
