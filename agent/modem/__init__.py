"""The hub's cellular link over a 5G module's AT port (issue 10).

- :mod:`agent.modem.serial_port`: :class:`~agent.modem.serial_port.AtPort`, pyserial under
  the event loop feeding the sans-I/O AT codec of :mod:`drivers.modem`.
- :mod:`agent.modem.link`: :class:`~agent.modem.link.LinkMachine`, the link's state machine
  and recovery ladder, sans-I/O (the clock is passed in).
- :mod:`agent.modem.manager`: :class:`~agent.modem.manager.ModemLink`, the machine driven
  over the port, and :func:`~agent.modem.manager.read_status` for the CLI.
- :mod:`agent.modem.status`: :class:`~agent.modem.status.ModemStatus`, the technician's
  figures.
"""
