"""Log observers: readable text, or one JSON object per line (``--log-format json``)."""

import sys

import orjson
from twisted.logger import formatEvent, formatTime, textFileLogObserver


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
