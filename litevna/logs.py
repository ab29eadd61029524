"""Log observers: readable text, or one JSON object per line (``--log-format json``), and
the access log line every request ends with.

No credential reaches a log line (SPEC §3): the access log names the path and query the
site left (``key_…``, ``_auth_token`` and a presigned URL's ``signature`` taken out), and no
header but the User-Agent.
"""

import functools
import string
import sys
from urllib.parse import unquote

import orjson
from twisted.logger import Logger, formatEvent, formatTime, textFileLogObserver

_access = Logger(namespace="litevna.access")
ACCESS_FORMAT = ('{client} "{method} {path}{query} {protocol}" {status} {bytes} '
                 '{duration_ms}ms "{user_agent}"')
#: Characters of a User-Agent kept in the access log.
MAX_AGENT = 256
_RECORD_KEYS = ("time", "level", "namespace", "message", "traceback")


class BatchedFile:
    """A stream whose flush() is left to a timer: a log line costs a buffer append, not a
    write syscall, on the request path. ``flush_now`` is what the timer calls."""

    def __init__(self, out):
        self._out = out

    def write(self, text):
        self._out.write(text)

    def flush(self):
        pass

    def flush_now(self):
        self._out.flush()


def access_log(method, path, query, protocol, status, size, seconds, user_agent, client):
    """Log one request as it ends (method, path, query, protocol and user_agent as bytes;
    query without its ``?``)."""
    fields = dict(client=client, method=_printable(method), path=_printable(safe_path(path)),
                  query="?" + _printable(safe_path(query)) if query else "",
                  protocol=_printable(protocol), status=status, bytes=size,
                  duration_ms=round(seconds * 1000, 3),
                  user_agent=_printable(user_agent[:MAX_AGENT]))
    # Formatted here once, plainly: observer_for's observers write it as it is (Twisted's
    # generic formatting of nine fields cost ~18 % of a cached frame request's CPU).
    line = (f'{fields["client"]} "{fields["method"]} {fields["path"]}{fields["query"]} '
            f'{fields["protocol"]}" {status} {size} {fields["duration_ms"]}ms '
            f'"{fields["user_agent"]}"')
    _access.info(ACCESS_FORMAT, access_line=line, **fields)


def safe_path(path):
    """A request path (bytes) with every ``key_…`` segment's value hidden: the site takes
    the one before ``/dicomweb`` out, but a path it does not route keeps it (also when
    percent-encoded)."""
    if b"key_" not in path.lower() and b"%" not in path:
        return path
    return b"/".join(b"[redacted]" if unquote(segment.decode("latin-1")).lower()
                     .startswith("key_") else segment for segment in path.split(b"/"))


def _printable(raw):
    """Bytes as text with quotes, backslashes and control characters escaped."""
    text = raw.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c not in '"\\' else
                   "\\" + c if c in '"\\' else f"\\x{ord(c):02x}" for c in text)


@functools.lru_cache(maxsize=512)
def _named_fields(log_format):
    """The plain field names of a format string, e.g. ('sop',) for 'stored {sop}'."""
    try:
        parsed = list(string.Formatter().parse(log_format))
    except ValueError:
        return ()
    return tuple(dict.fromkeys(name for _, name, _, _ in parsed
                               if name and name.isidentifier() and not name.startswith("log_")
                               and name not in _RECORD_KEYS))


def json_observer(out=sys.stdout):
    """An observer writing each event as one JSON line: time, level, namespace, message,
    and the fields the message names (``log.info("stored {sop}", sop=…)`` adds ``sop``)."""

    def observe(event):
        record = {
            "time": formatTime(event.get("log_time"), timeFormat="%Y-%m-%dT%H:%M:%S%z"),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "message": event.get("access_line") or formatEvent(event),
        }
        log_format = event.get("log_format")
        if isinstance(log_format, str):
            for name in _named_fields(log_format):
                if name in event:
                    value = event[name]
                    record[name] = value if isinstance(value, (str, int, float, bool)) \
                        or value is None else str(value)
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        try:
            line = orjson.dumps(record, default=str)
        except TypeError:  # an int beyond 64 bits, say: an observer must never raise
            line = orjson.dumps({k: v if isinstance(v, str) else str(v)
                                 for k, v in record.items()})
        out.write(line.decode() + "\n")
        out.flush()

    return observe


def text_observer(out=sys.stdout):
    """Twisted's text observer, with access lines written as they come (their time stamp
    formatted once a second)."""
    generic = textFileLogObserver(out)
    stamp = [None, ""]

    def observe(event):
        line = event.get("access_line")
        if line is None:
            return generic(event)
        second = int(event.get("log_time") or 0)
        if stamp[0] != second:
            stamp[0], stamp[1] = second, formatTime(second)
        out.write(f"{stamp[1]} [litevna.access#info] {line}\n")
        out.flush()

    return observe


def observer_for(log_format, out=sys.stdout):
    return json_observer(out) if log_format == "json" else text_observer(out)
