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
        """Consume a chunk of the body; return the events it completes.

        PART_DATA values may be memoryviews into ``data``: use them before the
        next call.
        """
        if self._state == _EPILOGUE:
            return []
        events = []
        delimiter = self._delimiter
        tail = self._buffer
        if tail and self._state == _BODY and len(data) >= len(delimiter):
            # The carried tail can only matter if a delimiter starts inside it.
            at = (tail + data[:len(delimiter)]).find(delimiter)
            if at < 0 or at >= len(tail):
                events.append((PART_DATA, tail))
                tail = b""
        buffer = tail + data if tail else data
        view = memoryview(buffer)
        pos = 0
        while True:
            state = self._state
            if state == _BODY:
                at = buffer.find(delimiter, pos)
                if at < 0:
                    # Keep what could be the start of a delimiter split across chunks.
                    end = len(buffer) - (len(delimiter) - 1)
                    if end > pos:
                        events.append((PART_DATA, view[pos:end]))
                        pos = end
                    break
                if at > pos:
                    events.append((PART_DATA, view[pos:at]))
                events.append((PART_END, None))
                pos = at + len(delimiter)
                self._state = _AFTER_DELIMITER
            elif state == _AFTER_DELIMITER:
                if len(buffer) - pos < 2:
                    break
                if buffer[pos:pos + 2] == b"--":
                    self._state = _EPILOGUE
                    pos = len(buffer)
                    break
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if len(buffer) - pos > self._max_header_bytes:
                        raise MultipartError("no line end after a boundary")
                    break
                if buffer[pos:end].strip(b" \t"):
                    raise MultipartError("unexpected text after a boundary")
                pos = end + 2
                self._state = _HEADERS
            elif state == _HEADERS:
                if buffer[pos:pos + 2] == b"\r\n":
                    headers, pos = {}, pos + 2
                else:
                    end = buffer.find(b"\r\n\r\n", pos, pos + self._max_header_bytes + 4)
                    if end < 0:
                        if len(buffer) - pos > self._max_header_bytes:
                            raise MultipartError("part headers are too large")
                        break
                    headers, pos = _parse_headers(buffer[pos:end]), end + 4
                self.parts += 1
                events.append((PART_HEADERS, headers))
                self._state = _BODY
            else:  # _PREAMBLE
                at = buffer.find(delimiter, pos)
                if at < 0:
                    pos = max(pos, len(buffer) - (len(delimiter) - 1))
                    break
                pos = at + len(delimiter)
                self._state = _AFTER_DELIMITER
        self._buffer = bytes(buffer[pos:])
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
