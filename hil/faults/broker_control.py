"""The broker's faults, as named actions on a running :class:`hil.broker.Broker`.

:class:`hil.broker.Broker` already manages the mosquitto process (start, graceful stop,
SIGKILL, restart on the same port, persistence on or off); this module does not duplicate it.
It names the faults a scenario injects, records each on the fault timeline
(:mod:`hil.faults.events`), and adds the two a platform broker shows that ``Broker`` does not
name:

=================  =============================================================  ==========
action             emulates                                                       sessions
=================  =============================================================  ==========
``stop``           a maintenance stop (SIGTERM, persistence written)              kept*
``crash``          a broker crash or power loss (SIGKILL)                         lost**
``start``          the broker back on the same port                               as left
``restart``        stop + start; ``forget=True``: a fresh node (file deleted)     kept* / lost
``freeze``         a hung broker (SIGSTOP): TCP still accepts, nothing answers    kept
``thaw``           SIGCONT after ``freeze``                                       kept
=================  =============================================================  ==========

\\* with ``persistence=True`` on the Broker; without it mosquitto keeps nothing across a stop.
\\** since the last autosave (mosquitto: every 1800 s): what it acknowledged meanwhile is gone.

``forget`` is :meth:`hil.broker.Broker.restart`'s option (added there for this part: the
persistence file is deleted between stop and start). Every action is synchronous (bounded by
the Broker's own start and stop timeouts) with an ``a``-prefixed form for asyncio callers.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

from hil.broker import Broker
from hil.faults.events import FaultLog, record
from hil.faults.process import await_stopped


@dataclass(frozen=True, slots=True)
class BrokerControl:
    """Fault actions on ``broker`` (module docstring), each recorded on ``log`` if given."""

    broker: Broker
    log: FaultLog | None = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM; persistence written when on)."""
        self.broker.stop()
        self._note("stop")

    def crash(self) -> None:
        """SIGKILL: nothing written that was not on disk already."""
        self.broker.kill()
        self._note("crash")

    def start(self) -> None:
        """Start again on the same port; returns once it completes a TLS handshake."""
        self.broker.start()
        self._note("start")

    def restart(self, *, forget: bool = False) -> None:
        """Graceful stop and start; ``forget``: without the persisted sessions."""
        self.broker.restart(forget=forget)
        self._note("restart", "forget" if forget else "keep")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, the kernel still accepts, nothing answers."""
        pid = self._pid()
        os.kill(pid, signal.SIGSTOP)
        await_stopped(pid, stopped=True)
        self._note("freeze")

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze` (``Broker.stop`` also thaws before it stops)."""
        pid = self._pid()
        os.kill(pid, signal.SIGCONT)
        await_stopped(pid, stopped=False)
        self._note("thaw")

    async def astop(self) -> None:
        """:meth:`stop` off the caller's loop."""
        await asyncio.to_thread(self.stop)

    async def acrash(self) -> None:
        """:meth:`crash` off the caller's loop."""
        await asyncio.to_thread(self.crash)

    async def astart(self) -> None:
        """:meth:`start` off the caller's loop."""
        await asyncio.to_thread(self.start)

    async def arestart(self, *, forget: bool = False) -> None:
        """:meth:`restart` off the caller's loop."""
        await asyncio.to_thread(self.restart, forget=forget)

    def _pid(self) -> int:
        pid = self.broker.pid
        if pid is None:
            raise RuntimeError("the broker is not running")
        return pid

    def _note(self, action: str, detail: str = "") -> None:
        where = f"port {self.broker.port}"
        record(self.log, "broker", action, f"{where} {detail}".strip())
