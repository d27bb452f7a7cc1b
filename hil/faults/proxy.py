"""A TCP proxy of ours on loopback in front of the broker: the network faults of a rig.

The hub connects to :attr:`LoopbackProxy.port` instead of the broker's; the proxy forwards
bytes (TLS passes through untouched: it never looks inside) until told otherwise. Its mode
changes at run time, from any thread or event loop:

``pass``
    Forward both ways.
``cut``
    Every connection is ended with a TCP RST on both sides (``SO_LINGER`` 0, then close), and
    the listening socket is closed while the port stays bound (not listening), so a new
    connection is refused by the kernel: what a client sees when the link's far end is gone.
``blackhole``
    Connections are accepted and kept, nothing is forwarded either way: what a dead cellular
    link or a carrier NAT that lost the mapping looks like. Bytes sent into it wait in the
    proxy's bounded buffers and then in the kernel's socket buffers (the sender's TCP window
    closes); if the mode returns to ``pass`` they are delivered, as TCP delivers after an
    outage shorter than its retransmission timeout. Only an application's own liveness check
    (MQTT keepalive) detects it.
``flap(up_s, down_s, times)``
    ``times`` cycles of ``cut`` for ``down_s`` then ``pass`` for ``up_s``, run as a task on the
    proxy's own event loop; setting a mode by hand ends the flap.

The proxy runs its own asyncio loop on a named thread (``hil.proxy[<port>]``), so synchronous
code (a scenario step, a pytest test without a loop) and asyncio code (the hub's uplink on the
test's loop) use it alike; ``a``-prefixed methods are the awaitable forms. Mode changes return
once they took effect (connections reset, listener closed or open).

Limits: loopback only (127.0.0.1); a blackhole accepts new connections (the kernel completes
the TCP handshake before any accept), where a real dead link would leave the SYN unanswered,
so a client sees its TLS handshake time out rather than its TCP connect. A cut resets; it does
not emulate an ICMP "unreachable". Bounds: ``max_connections`` at once (more are reset at
accept), per connection and direction at most ``2 * chunk_bytes`` in the reader plus one
chunk held.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from hil.faults.events import FaultLog, record

CHUNK_BYTES: Final = 65_536
"""One read; also the StreamReader's limit, so a connection's buffers stay a few chunks."""
MAX_CONNECTIONS: Final = 64
"""A hub keeps one MQTT connection; a reconnect storm during a blackhole is held to this."""
UPSTREAM_CONNECT_TIMEOUT_S: Final = 2.0
"""Connecting to the broker on loopback takes < 1 ms; a broker that is down refuses at once."""
SHUTDOWN_WAIT_S: Final = 3.0
"""On stop, for connections still connecting upstream to end; outer to the connect timeout."""
CONTROL_TIMEOUT_S: Final = 5.0
"""A mode change, start or stop on the proxy's loop; outer to SHUTDOWN_WAIT_S."""
JOIN_TIMEOUT_S: Final = 5.0
"""Joining the proxy's thread on stop (its loop has nothing left to do by then)."""
_T = TypeVar("_T")

_SO_LINGER_RST: Final = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, 0 s: close() sends RST instead of FIN."""


class ProxyMode(enum.StrEnum):
    """What the proxy does with the bytes (module docstring)."""

    PASS = "pass"  # noqa: S105 - a mode, not a password
    CUT = "cut"
    BLACKHOLE = "blackhole"


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters since start.

    Attributes:
        mode: the mode in force.
        bytes_up: bytes forwarded client -> broker.
        bytes_down: bytes forwarded broker -> client.
        accepted: client connections accepted (each a new TCP connection: reconnects count).
        open: proxied connections open now.
        reset: connections ended with RST by a cut.
        upstream_failures: accepted connections the broker did not take (it was down).
        over_limit: connections reset at accept because ``max_connections`` were open.
        cuts: how many times the mode became ``cut`` (by hand or by a flap).
    """

    mode: ProxyMode
    bytes_up: int
    bytes_down: int
    accepted: int
    open: int
    reset: int
    upstream_failures: int
    over_limit: int
    cuts: int


class Flap:
    """A running ``flap``: wait for its end or cancel it (from any thread or loop)."""

    def __init__(self, future: concurrent.futures.Future[None]) -> None:
        self._future = future

    def done(self) -> bool:
        """Whether the schedule ended (ran out, was cancelled, or the proxy stopped)."""
        return self._future.done()

    def wait(self, timeout: float) -> None:
        """Block until the schedule ended; TimeoutError after ``timeout``."""
        with contextlib.suppress(concurrent.futures.CancelledError):
            self._future.result(timeout)

    async def await_done(self) -> None:
        """:meth:`wait` for asyncio callers (wrap it in ``asyncio.timeout``)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(asyncio.wrap_future(self._future))

    def cancel(self) -> None:
        """End the schedule where it is (the mode stays as it was at that moment)."""
        self._future.cancel()


class _Connection:
    """Both sockets of one proxied connection and its two pumps."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.pumps: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        _reset(self.client)
        _reset(self.upstream)


class LoopbackProxy:
    """The proxy (module docstring). Use as a context manager, sync or async, or call
    :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        max_connections: int = MAX_CONNECTIONS,
        chunk_bytes: int = CHUNK_BYTES,
        log: FaultLog | None = None,
    ) -> None:
        if not 0 < upstream_port < 65536:
            raise ValueError("upstream_port must be 1-65535")
        if max_connections < 1 or chunk_bytes < 1:
            raise ValueError("max_connections and chunk_bytes must be >= 1")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        self.chunk_bytes = chunk_bytes
        self._log = log
        self._port = 0
        self._mode = ProxyMode.PASS
        self._counts = dict.fromkeys(
            ("bytes_up", "bytes_down", "accepted", "reset", "upstream_failures", "over_limit"),
            0,
        )
        self._cuts = 0
        self._changed = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Owned by the proxy's loop from start on:
        self._server: asyncio.Server | None = None
        self._held: socket.socket | None = None
        self._forwarding: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        """Connections forwarding (or held by a blackhole): what a cut resets."""
        self._serving: set[asyncio.Task[None]] = set()
        """Every accepted connection not yet ended, connecting upstream included."""
        self._flap: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port clients connect to (127.0.0.1), known once started."""
        if not self._port:
            raise RuntimeError("proxy not started")
        return self._port

    @property
    def mode(self) -> ProxyMode:
        """The mode in force."""
        return self._mode

    def start(self) -> None:
        """Bind a free loopback port and start forwarding (mode ``pass``)."""
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", 0))
        self._port = held.getsockname()[1]
        self._held = held
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"hil.proxy[{self._port}]", daemon=True
        )
        self._thread.start()
        self._call(self._apply(ProxyMode.PASS))

    def stop(self) -> None:
        """Reset every connection, close the port, stop the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(JOIN_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._thread = None

    async def astart(self) -> None:
        """:meth:`start` without blocking the caller's loop."""
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        """:meth:`stop` without blocking the caller's loop."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- faults ---------------------------------------------------------------------------

    def set_mode(self, mode: ProxyMode | str) -> None:
        """Switch to ``mode``; returns once it took effect. Ends a running flap."""
        self._call(self._set_by_hand(ProxyMode(mode)))

    async def aset_mode(self, mode: ProxyMode | str) -> None:
        """:meth:`set_mode` for asyncio callers."""
        await asyncio.to_thread(self.set_mode, mode)

    def pass_through(self) -> None:
        """``set_mode("pass")``."""
        self.set_mode(ProxyMode.PASS)

    def cut(self) -> None:
        """``set_mode("cut")``."""
        self.set_mode(ProxyMode.CUT)

    def blackhole(self) -> None:
        """``set_mode("blackhole")``."""
        self.set_mode(ProxyMode.BLACKHOLE)

    def flap(self, up_s: float, down_s: float, times: int) -> Flap:
        """Start ``times`` cycles of cut ``down_s`` then pass ``up_s``; ends in ``pass``.

        A flap already running is ended first. The schedule's pauses are the fault itself,
        timed on the proxy's loop, not a synchronisation.
        """
        if up_s <= 0 or down_s <= 0 or times < 1:
            raise ValueError("up_s and down_s must be > 0, times >= 1")
        loop = self._running_loop()

        async def begin() -> asyncio.Task[None]:
            self._end_flap()
            task = asyncio.create_task(self._run_flap(up_s, down_s, times), name="hil.proxy.flap")
            self._flap = task
            return task

        task = self._call(begin())
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def settle(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                future.cancel()
            elif (exc := done.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(None)

        def cancel_task(f: concurrent.futures.Future[None]) -> None:
            if f.cancelled() and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)

        loop.call_soon_threadsafe(task.add_done_callback, settle)
        future.add_done_callback(cancel_task)
        return Flap(future)

    # -- observation ----------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        """The counters now."""
        with self._changed:
            return self._snapshot()

    def wait_until(self, predicate: Callable[[ProxyStats], bool], timeout: float) -> ProxyStats:
        """Block until ``predicate(stats)`` holds; return those stats. TimeoutError if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._snapshot()), timeout):
                raise TimeoutError(f"proxy stats did not reach the condition in {timeout} s")
            return self._snapshot()

    async def await_until(self, predicate: Callable[[ProxyStats], bool]) -> ProxyStats:
        """:meth:`wait_until` for asyncio callers (wrap it in ``asyncio.timeout``): woken by
        every change, on the caller's loop."""
        wake = asyncio.Event()
        waiter = (asyncio.get_running_loop(), wake)
        with self._changed:
            self._waiters.add(waiter)
        try:
            while True:
                wake.clear()
                stats = self.stats()
                if predicate(stats):
                    return stats
                await wake.wait()
        finally:
            with self._changed:
                self._waiters.discard(waiter)

    # -- internals (the caller's side) ----------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("proxy not started")
        return self._loop

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._running_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking proxy call from the proxy's own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(CONTROL_TIMEOUT_S)

    def _snapshot(self) -> ProxyStats:
        c = self._counts
        return ProxyStats(
            mode=self._mode,
            bytes_up=c["bytes_up"],
            bytes_down=c["bytes_down"],
            accepted=c["accepted"],
            open=len(self._serving),
            reset=c["reset"],
            upstream_failures=c["upstream_failures"],
            over_limit=c["over_limit"],
            cuts=self._cuts,
        )

    def _count(self, name: str, by: int = 1) -> None:
        with self._changed:
            self._counts[name] += by
            self._wake_all()

    def _notify(self) -> None:
        with self._changed:
            self._wake_all()

    def _wake_all(self) -> None:
        """Under ``_changed``: wake sync waiters and each async waiter on its own loop."""
        self._changed.notify_all()
        for loop, wake in self._waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake.set)

    # -- internals (the proxy's loop) -----------------------------------------------------

    async def _set_by_hand(self, mode: ProxyMode) -> None:
        self._end_flap()
        await self._apply(mode)

    def _end_flap(self) -> None:
        if self._flap is not None and not self._flap.done():
            self._flap.cancel()
        self._flap = None

    async def _apply(self, mode: ProxyMode, *, action: str | None = None) -> None:
        """Put ``mode`` in force; record it (as ``action`` when given) on the timeline."""
        if self._forwarding is None:
            self._forwarding = asyncio.Event()
        if mode is ProxyMode.CUT:
            self._forwarding.clear()
            self._close_listener()
            resets = len(self._connections)
            for conn in list(self._connections):
                conn.reset()
            self._connections.clear()
            with self._changed:
                self._counts["reset"] += resets
                self._cuts += 1
                self._wake_all()
        else:
            await self._open_listener()
            if mode is ProxyMode.PASS:
                self._forwarding.set()
            else:
                self._forwarding.clear()
        with self._changed:
            self._mode = mode
            self._wake_all()
        record(self._log, "proxy", action or mode.value, f"port {self._port}")

    async def _open_listener(self) -> None:
        if self._server is not None:
            return
        held, self._held = self._held, None
        assert held is not None
        self._server = await asyncio.start_server(
            self._serve, sock=held, limit=self.chunk_bytes, backlog=self.max_connections
        )

    def _close_listener(self) -> None:
        """Stop listening but keep the port bound, so nobody else takes it meanwhile."""
        if self._server is None:
            return
        self._server.close()  # closes the listening socket at once
        self._server = None
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self._port))
        self._held = held

    async def _shutdown(self) -> None:
        flap = self._flap
        self._end_flap()
        await self._apply(ProxyMode.CUT, action="stop")
        # Let the flap take its cancellation and each connection's task see its reset (or
        # its upstream connect end) before the loop stops: one bounded wait for all.
        ending = set(self._serving) | ({flap} if flap is not None else set())
        if ending:
            await asyncio.wait(ending, timeout=SHUTDOWN_WAIT_S)
        if self._held is not None:
            self._held.close()
            self._held = None

    async def _run_flap(self, up_s: float, down_s: float, times: int) -> None:
        for _ in range(times):
            await self._apply(ProxyMode.CUT)
            await asyncio.sleep(down_s)  # the outage's length: the fault, not a sync
            await self._apply(ProxyMode.PASS)
            await asyncio.sleep(up_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode is ProxyMode.CUT:  # accepted just before the listener closed
            _reset(writer)
            return
        if len(self._serving) >= self.max_connections:  # counts those still connecting
            self._count("over_limit")
            _reset(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        self._count("accepted")
        try:
            await self._proxy(reader, writer)
        finally:
            self._serving.discard(task)
            self._notify()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT_S):
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port, limit=self.chunk_bytes
                )
        except (OSError, TimeoutError):
            self._count("upstream_failures")
            _reset(writer)
            return
        if self.mode is ProxyMode.CUT:  # cut while we connected upstream (read anew)
            _reset(writer)
            _reset(up_writer)
            return
        conn = _Connection(writer, up_writer)
        self._connections.add(conn)
        conn.pumps = [
            asyncio.create_task(self._pump(reader, up_writer, "bytes_up"), name="hil.proxy.up"),
            asyncio.create_task(self._pump(up_reader, writer, "bytes_down"), name="hil.proxy.down"),
        ]
        results = await asyncio.gather(*conn.pumps, return_exceptions=True)
        if conn in self._connections:  # ended by its peers, not by a cut
            self._connections.discard(conn)
            failed = any(isinstance(r, BaseException) for r in results)
            for w in (writer, up_writer):
                if failed:
                    _reset(w)
                else:
                    w.close()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: str
    ) -> None:
        forwarding = self._forwarding
        assert forwarding is not None
        while True:
            await forwarding.wait()
            data = await src.read(self.chunk_bytes)
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()  # half-close, as the sender did
                return
            await forwarding.wait()  # blackholed meanwhile: this one chunk waits here
            dst.write(data)
            await dst.drain()
            self._count(counter, len(data))


def _reset(writer: asyncio.StreamWriter) -> None:
    """End a connection with RST: SO_LINGER 0, then abort (no FIN, unsent data dropped)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _SO_LINGER_RST)
    transport.abort()
