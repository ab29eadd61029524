"""JSON request and response bodies for the account, store, key and token routes."""

import orjson

from litevna.http.errors import HTTPError

JSON = b"application/json"


def read_json(request, required=True):
    """The request body as a JSON object (dict); HTTPError 400 if it is not one."""
    request.content.seek(0)
    raw = request.content.read()
    if not raw.strip():
        if required:
            raise HTTPError(400, "the request body is empty: send a JSON object")
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "the request body is a JSON object")
    return value


def respond(request, value, status=200):
    """Write value as a JSON response body (returned for Klein to send)."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Cache-Control", b"no-store")
    return orjson.dumps(value)
