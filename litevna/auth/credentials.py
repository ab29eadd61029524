"""Where a request carries its token (SPEC §3).

Only ``Authorization: Bearer`` is wired in so far; the other methods of the
client's document (Basic, path prefix, cookie, query) slot into CREDENTIAL_ORDER.
"""

from litevna.auth.guard import Unauthorized, bearer_token


def from_authorization(request):
    return bearer_token(_header(request, b"authorization"))


#: Tried in this order; the first one present is the one judged (an invalid one is never skipped).
CREDENTIAL_ORDER = (from_authorization,)


def request_token(request):
    """The token a request presents, or None; Unauthorized if one is malformed."""
    for method in CREDENTIAL_ORDER:
        token = method(request)
        if token is not None:
            return token
    return None


def _header(request, name):
    value = request.requestHeaders.getRawHeaders(name)
    if not value:
        return None
    try:
        return value[0].decode("ascii")
    except UnicodeDecodeError:
        raise Unauthorized("the Authorization header is not ASCII") from None
