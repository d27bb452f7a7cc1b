"""Fault injection as parts of the rig: each fault a scenario applies to the hub is a small,
tested part here (or in the emulators, where the fault is the device's own), usable from
synchronous and asyncio code, and recording what it did on one timeline
(:class:`hil.faults.events.FaultLog`: monotonic time, part, action, detail; never PHI), so a
scenario's report can say which fault was in force when the hub did what it did. No part needs
a hook in the product: the network is a proxy of ours, processes are signalled, the disk is a
kernel limit, the clock is stepped inside a wrapper process.

Every part, what it emulates, and its limits:

:mod:`hil.faults.proxy` (``LoopbackProxy``)
    The link, between the hub and the broker: ``pass``, ``cut`` (RST, new connections
    refused), ``blackhole`` (a dead cellular link: kept open, nothing forwarded), ``flap``.
    Limits: loopback only; a blackhole still completes the TCP handshake (a dead radio would
    not); no added delay, loss or bandwidth shaping.
:mod:`hil.faults.broker_control` (``BrokerControl``)
    The broker: stop, crash (SIGKILL), start, restart keeping or forgetting its persisted
    sessions, freeze/thaw (a hung broker). Limits: mosquitto through hil/broker.py; a crash
    loses what it acknowledged since its last autosave, as the real one does.
:mod:`hil.faults.process` (``Killer``)
    Process faults: SIGKILL, SIGTERM or a freeze (SIGSTOP, SIGCONT) at a moment drawn from a
    seeded RNG in a window, or when a log line says so ("during upload"). Limits: arm against
    a live child (a reaped pid may be reused); a log file is polled every 10 ms.
:mod:`hil.faults.disk` (``FileSizeLimit``, ``TmpfsLimit``)
    A full disk: RLIMIT_FSIZE (EFBIG, no privileges, also on a running process, per file) or
    a tmpfs over the state directory in the child's mount namespace (ENOSPC, a real total;
    root or user namespaces; its data dies with the child).
:mod:`hil.faults.clock`, :mod:`hil.faults.clock_child`
    Wall-clock steps (an NTP jump, a wrong RTC) for a ``homehub`` child: at start, on
    SIGUSR2, once after a delay. Limits: Python's ``time.time`` and ``datetime.now`` only, not
    OpenSSL's or SQLite's clock; monotonic time is not stepped (nor is it by a real step).
:mod:`hil.emulators.modem` (``EmulatedModem``, ``ModemState`` in hil/emulators/modem_at.py)
    The 5G module's states and faults: signal, registration, SIM, resets, USB
    re-enumeration. Not rewritten here.
:mod:`hil.emulators.quirks` and each emulator's switches
    BLE device quirks: slow connection set-up; the cuff's advertising window, the
    glucometer's numbering and RACP faults, the oximeter's streams. Not rewritten here.

The package imports nothing on import: ``python -m hil.faults.clock_child`` must patch the
clock before anything else reads it.
"""
