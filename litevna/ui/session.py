"""The web session at the HTTP edge: its cookie, the CSRF checks and request bodies.

A session is an HttpOnly, SameSite=Strict cookie (SPEC §2) whose value the index
knows only as a hash (``Accounts.open_session``). Every state-changing request a
session authenticates must also carry the session's CSRF token: in the
``X-CSRF-Token`` header (JSON) or in a ``csrf`` form field (HTML forms). The
anonymous forms (sign-up, log-in) have no session yet; they use a double-submit
cookie, ``litevna-csrf``, whose value the form repeats in its hidden field.
"""

import hmac
import secrets
from urllib.parse import parse_qsl

from litevna.accounts import SESSION_SECONDS
from litevna.http.errors import HTTPError

SESSION_COOKIE = b"litevna-session"
CSRF_COOKIE = b"litevna-csrf"
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf"
JSON, FORM = "json", "form"
#: How long a sign-up or log-in form stays usable after it was shown.
FORM_SECONDS = 3600


def secure(request, public_url):
    """Whether cookies get ``Secure``: served over TLS here, or behind a TLS proxy."""
    return request.isSecure() or (public_url or "").startswith("https:")


def set_cookie(request, name, value, max_age, public_url, same_site="strict", path=b"/"):
    """Set an HttpOnly cookie (Secure on HTTPS)."""
    request.addCookie(name, value, path=path, max_age=str(int(max_age)), httpOnly=True,
                      sameSite=same_site, secure=secure(request, public_url))


def clear_cookie(request, name, public_url, path=b"/"):
    set_cookie(request, name, b"", 0, public_url, path=path)


def start_session(request, accounts, account_id, public_url):
    """Open a session for account_id and set its cookie (ending the session the cookie
    named before, if any); the new session's row, with the account's email and the
    CSRF token."""
    previous = cookie_value(request, SESSION_COOKIE)
    if previous:
        accounts.close_session(previous)
    opened = accounts.open_session(account_id)
    set_cookie(request, SESSION_COOKIE, opened["value"], SESSION_SECONDS, public_url)
    return accounts.session(opened["value"])


def cookie_value(request, name):
    value = request.getCookie(name)
    return value.decode("ascii", "replace") if value else None


def current_session(request, accounts):
    """The live session row of the request's cookie, or None."""
    return accounts.session(cookie_value(request, SESSION_COOKIE))


def require_session(request, accounts):
    """The live session row, or HTTPError 401."""
    session = current_session(request, accounts)
    if session is None:
        raise HTTPError(401, "log in first: POST /login with your email and password")
    return session


def check_csrf(session, given):
    """Refuse (403) a state-changing request without the session's CSRF token."""
    if not _same(given, session["csrf"]):
        raise HTTPError(403, "CSRF token missing or wrong")


def json_csrf(request, session):
    """check_csrf() with the token of the X-CSRF-Token header."""
    given = request.getHeader(CSRF_HEADER)
    check_csrf(session, given.decode("ascii", "replace") if given else None)


def form_token(request, public_url):
    """The double-submit token for an anonymous form: the cookie's, or a new one set now."""
    token = cookie_value(request, CSRF_COOKIE)
    if not token:
        token = secrets.token_urlsafe(32)
        set_cookie(request, CSRF_COOKIE, token, FORM_SECONDS, public_url)
    return token


def check_form_token(request, form):
    """Refuse (403) an anonymous form whose hidden field does not repeat its cookie."""
    cookie = cookie_value(request, CSRF_COOKIE)
    if not cookie or not _same(form.get(CSRF_FIELD), cookie):
        raise HTTPError(403, "CSRF token missing or wrong")


def _media_type(request):
    return (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()


def is_form(request):
    """Whether the request's body is an urlencoded form (from the web pages)."""
    return _media_type(request) == b"application/x-www-form-urlencoded"


def body_kind(request):
    """JSON or FORM by the request's Content-Type; 415 for anything else (a cross-site
    form can send text/plain that parses as JSON: it is refused here)."""
    if is_form(request):
        return FORM
    if _media_type(request) == b"application/json":
        return JSON
    raise HTTPError(415, "send application/json (or a form, from the web pages)")


class Form:
    """An urlencoded form body, read from the body alone (``request.args`` would mix
    in the query string)."""

    def __init__(self, request):
        request.content.seek(0)
        raw = request.content.read().decode("utf-8", "replace")
        self._values = {}
        for name, value in parse_qsl(raw, keep_blank_values=True):
            self._values.setdefault(name, []).append(value)

    def get(self, name, default=""):
        """The first value of field name."""
        return self._values.get(name, [default])[0]

    def getall(self, name):
        """Every value of field name (a group of checkboxes)."""
        return list(self._values.get(name, ()))


def _same(given, expected):
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
