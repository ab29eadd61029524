"""Errors as values at the HTTP edge: one JSON body, the right status, no traceback."""

import orjson


class HTTPError(Exception):
    """An error response: status, a human message, optional extra headers."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self):
        return orjson.dumps({"error": self.message, "status": self.status})


def write_error(request, error):
    """Set status, headers and body of request from an HTTPError; return the body."""
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json")
    for name, value in error.headers.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    return error.body()
