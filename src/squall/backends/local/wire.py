"""Length-prefixed JSON frames between the coordinator and its local worker processes, one message each.

Each frame holds one :mod:`squall.runtime.messages` record, encoded as JSON:
plain data, so a worker can be any process that speaks this format, and
errors arrive as text, never as objects to unpickle.
"""

from __future__ import annotations

import json
import os
import struct


from squall.runtime.messages import Message, decode, encode

_HEADER = struct.Struct(">I")


def frame(message: Message) -> bytes:
    """``message`` as one frame: its length, then its JSON."""
    body = json.dumps(encode(message), separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def send(fd: int, message: Message) -> None:
    """Write one whole frame to ``fd`` (blocking)."""
    data = memoryview(frame(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def receive(fd: int) -> Message | None:
    """Read one whole frame from ``fd`` (blocking); ``None`` at end of stream."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if body is None else decode(json.loads(body))


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts: list[bytes] = []
    while size:
        block = os.read(fd, size)
        if not block:
            return None
        parts.append(block)
        size -= len(block)
    return b"".join(parts)


class FrameBuffer:
    """Reassembles frames from whatever bytes arrive, so a reader never blocks on a stalled writer."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return the message of every frame now complete."""
        self._data.extend(data)
        messages = []
        while len(self._data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._data)
            end = _HEADER.size + size
            if len(self._data) < end:
                break
            messages.append(decode(json.loads(bytes(self._data[_HEADER.size : end]))))
            del self._data[:end]
        return messages
