"""Where a request carries its token: the five methods of the client's document (SPEC §3).

1. ``Authorization: Bearer T``  2. ``Authorization: Basic base64(litevna:T)``
3. path ``/{label}/key_T/dicomweb/…``  4. cookie ``litevna-token=T``  5. query ``_auth_token=T``

If more than one is present the first in that order is judged; a malformed one is a 401,
never skipped in favour of the next. The path and query secrets are taken out of the
request by ``litevna.http.site`` before anything can log them (``path_token``,
``query_token``).
"""

import base64
import binascii

from litevna.auth.guard import Unauthorized

COOKIE = b"litevna-token"
BASIC_USER = "litevna"


def from_authorization(request):
    """Methods 1 and 2: the token of an Authorization header, or None without one."""
    values = request.requestHeaders.getRawHeaders(b"authorization")
    if not values:
        return None
    if len(values) > 1:
        raise Unauthorized("send one Authorization header")
    scheme, _, credential = values[0].strip().partition(b" ")
    credential = credential.strip()
    scheme = scheme.lower()
    if scheme == b"bearer":
        return _ascii(credential, "Bearer")
    if scheme == b"basic":
        return _basic(credential)
    raise Unauthorized("the Authorization scheme is Bearer or Basic")


def from_path(request):
    """Method 3: ``key_T`` before ``/dicomweb`` (taken from the path by the site)."""
    return _nonempty(request.path_token, "key_ path segment")


def from_cookie(request):
    """Method 4: the ``litevna-token`` cookie."""
    value = request.getCookie(COOKIE)
    if value is None:
        return None
    return _ascii(value.strip().strip(b'"'), "litevna-token cookie")


def from_query(request):
    """Method 5: ``?_auth_token=T`` (taken from the URI by the site)."""
    token = request.query_token
    if token is None:
        return None
    return _ascii(token if isinstance(token, bytes) else token.encode("latin-1"),
                  "_auth_token parameter")


#: Tried in this order; the first one present is the one judged (an invalid one is never skipped).
CREDENTIAL_ORDER = (from_authorization, from_path, from_cookie, from_query)


def request_token(request):
    """The token a request presents, or None; Unauthorized if the one judged is malformed."""
    for method in CREDENTIAL_ORDER:
        token = method(request)
        if token is not None:
            return token
    return None


def _basic(credential):
    try:
        decoded = base64.b64decode(credential, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise Unauthorized("the Basic credential is not base64 of ASCII 'litevna:<token>'") from None
    user, colon, token = decoded.partition(":")
    if not colon or user != BASIC_USER:
        raise Unauthorized("the Basic credential's user name must be 'litevna'")
    return _nonempty(token, "Basic password")


def _ascii(raw, where):
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Unauthorized(f"the {where} is not ASCII") from None
    return _nonempty(text, where)


def _nonempty(token, where):
    if token is None:
        return None
    if not token:
        raise Unauthorized(f"the {where} is empty")
    return token
