"""The modem's AT dialect, sans-I/O: bytes in, typed events and typed values out.

- :mod:`drivers.modem.at_codec`: :class:`~drivers.modem.at_codec.AtCodec`, the connection
  object (``send`` → bytes, ``receive_data`` ← bytes, ``next_event`` → events) that frames
  lines and tells a command's response from unsolicited result codes.
- :mod:`drivers.modem.params`: the V.250 parameter tokenizer the parsers share.
- :mod:`drivers.modem.ts27007`: command builders and typed parsers for 3GPP TS 27.007.
- :mod:`drivers.modem.quectel`: the Quectel RG50xQ/RM5xxQ (RM500Q, RM520N) vendor commands.

Nothing here opens a port or reads a clock: the pyserial adapter feeds the codec, owns the
timeouts and passes ``now`` in.
"""
