"""Log observers: readable text, or one JSON object per line (``--log-format json``)."""

import sys

import orjson
from twisted.logger import formatEvent, formatTime, textFileLogObserver


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


def json_observer(out=sys.stdout):
    """An observer writing each event as one JSON line: time, level, namespace, message."""

    def observe(event):
        record = {
            "time": formatTime(event.get("log_time"), timeFormat="%Y-%m-%dT%H:%M:%S%z"),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        out.write(orjson.dumps(record, default=str).decode() + "\n")
        out.flush()

    return observe


def observer_for(log_format, out=sys.stdout):
    return json_observer(out) if log_format == "json" else textFileLogObserver(out)
