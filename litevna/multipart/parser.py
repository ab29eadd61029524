"""A sans-IO multipart parser: bytes in, events out.

Feed it the body in chunks of any size; it returns a list of events:

* ``(PART_HEADERS, {name: value})`` — names lower-cased, values as str;
* ``(PART_DATA, bytes)`` — some of the current part's body, in order;
* ``(PART_END, None)`` — the current part is complete.

It never holds more than one chunk plus a delimiter's length of body, so a
part of any size streams through in bounded memory.
"""

PART_HEADERS = 1
PART_DATA = 2
PART_END = 3

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE = range(5)


class MultipartError(ValueError):
    """The body is not a well-formed multipart body."""


class MultipartParser:
    """Incremental parser for one multipart body with a known boundary."""

    def __init__(self, boundary, max_header_bytes=16384):
        if isinstance(boundary, str):
            boundary = boundary.encode("latin-1")
        # RFC 2046 §5.1.1: 1 to 70 characters.
        if not 0 < len(boundary) <= 70:
            raise MultipartError("the boundary must be 1 to 70 characters")
        self._delimiter = b"\r\n--" + boundary
        self._max_header_bytes = max_header_bytes
        # The first delimiter may open the body without a preceding CRLF.
        self._buffer = b"\r\n"
        self._state = _PREAMBLE
        self.parts = 0

    @property
    def complete(self):
        """True once the closing delimiter has been read."""
        return self._state == _EPILOGUE

    def feed(self, data):
        """Consume a chunk of the body; return the events it completes."""
        if self._state == _EPILOGUE:
            return []
        buffer = self._buffer + data if self._buffer else bytes(data)
        events = []
        delimiter = self._delimiter
        while True:
            state = self._state
            if state == _BODY:
                at = buffer.find(delimiter)
                if at < 0:
                    # Keep what could be the start of a delimiter split across chunks.
                    keep = len(delimiter) - 1
                    if len(buffer) > keep:
                        events.append((PART_DATA, buffer[:-keep]))
                        buffer = buffer[-keep:]
                    break
                if at:
                    events.append((PART_DATA, buffer[:at]))
                events.append((PART_END, None))
                buffer = buffer[at + len(delimiter):]
                self._state = _AFTER_DELIMITER
            elif state == _AFTER_DELIMITER:
                if len(buffer) < 2:
                    break
                if buffer[:2] == b"--":
                    self._state = _EPILOGUE
                    buffer = b""
                    break
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > self._max_header_bytes:
                        raise MultipartError("no line end after a boundary")
                    break
                if buffer[:end].strip(b" \t"):
                    raise MultipartError("unexpected text after a boundary")
                buffer = buffer[end + 2:]
                self._state = _HEADERS
            elif state == _HEADERS:
                if buffer[:2] == b"\r\n":
                    headers, consumed = {}, 2
                else:
                    end = buffer.find(b"\r\n\r\n", 0, self._max_header_bytes + 4)
                    if end < 0:
                        if len(buffer) > self._max_header_bytes:
                            raise MultipartError("part headers are too large")
                        break
                    headers, consumed = _parse_headers(buffer[:end]), end + 4
                buffer = buffer[consumed:]
                self.parts += 1
                events.append((PART_HEADERS, headers))
                self._state = _BODY
            else:  # _PREAMBLE
                at = buffer.find(delimiter)
                if at < 0:
                    buffer = buffer[-(len(delimiter) - 1):]
                    break
                buffer = buffer[at + len(delimiter):]
                self._state = _AFTER_DELIMITER
        self._buffer = buffer
        return events

    def close(self):
        """Declare the end of the body; raise if it was cut short."""
        if self._state != _EPILOGUE:
            if self.parts == 0 and self._state == _PREAMBLE:
                raise MultipartError("no boundary found in the body")
            raise MultipartError("the body ended before the closing boundary")


def _parse_headers(block):
    headers = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise MultipartError(f"malformed part header {line[:80]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers
