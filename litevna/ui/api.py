"""The JSON account API (SPEC §2): accounts, sessions, image stores and their API keys.

Scripts may use it as the pages do: ``POST /login`` sets the session cookie and
answers the session's ``csrfToken``, which every later POST and DELETE repeats in
``X-CSRF-Token``.

``POST /accounts`` and a JSON ``POST /login`` need no CSRF token: there is no
session to ride on yet, and a page on another site cannot forge them. A form
cannot send ``application/json``, and ``fetch`` can only with a CORS preflight,
whose answer never allows credentials, so the browser neither sends our cookies
with such a request nor keeps the session cookie of its answer. The same bodies
sent as forms (the log-in page) carry the double-submit token instead
(``litevna.ui.pages``).
"""

from litevna.accounts import unix_ms
from litevna.http.errors import HTTPError
from litevna.http.jsonapi import read_json, respond
from litevna.ui import actions, pages
from litevna.ui.session import (FORM, JSON, SESSION_COOKIE, body_kind, clear_cookie,
                                cookie_value, is_form, json_csrf, require_session,
                                start_session)


def _no_content(request):
    request.setResponseCode(204)
    return b""


def _fields(body, strings=(), others=()):
    """body, checked: no fields but these, and the strings ones strings where given."""
    unknown = set(body) - set(strings) - set(others)
    if unknown:
        raise HTTPError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    for name in strings:
        if not isinstance(body.get(name, ""), str):
            raise HTTPError(400, f"{name} is a string")
    return body


def add_routes(cls):
    """Add the JSON routes to the Application class. The log-in and log-out forms post
    to the same paths; litevna.ui.pages answers those."""
    app = cls.app

    def changing(self, request):
        """The session of a state-changing JSON request, CSRF-checked (401, 403)."""
        session = require_session(request, self.accounts)
        json_csrf(request, session)
        return session

    @app.route("/accounts", methods=["POST"])
    def api_sign_up(self, request):
        if body_kind(request) != JSON:
            raise HTTPError(415, "send a JSON object {\"email\", \"password\"}")
        body = _fields(read_json(request), strings=("email", "password"))
        account_id = actions.sign_up(self, body.get("email"), body.get("password"))
        session = start_session(request, self.accounts, account_id, self.config.public_url)
        return respond(request, {"email": session["email"], "csrfToken": session["csrf"]}, 201)

    @app.route("/login", methods=["POST"])
    def api_log_in(self, request):
        if body_kind(request) == FORM:
            return pages.log_in_form(self, request)
        body = _fields(read_json(request), strings=("email", "password"))
        account = actions.log_in(self, body.get("email"), body.get("password"))
        session = start_session(request, self.accounts, account["id"], self.config.public_url)
        return respond(request, {"email": session["email"], "csrfToken": session["csrf"]})

    @app.route("/logout", methods=["POST"])
    def api_log_out(self, request):
        if is_form(request):
            return pages.log_out_form(self, request)
        changing(self, request)
        self.accounts.close_session(cookie_value(request, SESSION_COOKIE))
        clear_cookie(request, SESSION_COOKIE, self.config.public_url)
        return _no_content(request)

    @app.route("/image-stores", methods=["GET"])
    def api_stores(self, request):
        session = require_session(request, self.accounts)
        return respond(request, {"stores": self.accounts.stores_of(session["account_id"])})

    @app.route("/image-stores", methods=["POST"])
    def api_create_store(self, request):
        session = changing(self, request)
        body = _fields(read_json(request), strings=("label",))
        label = actions.create_store(self, session, body.get("label"))
        return respond(request, {"label": label}, 201)

    @app.route("/image-stores/<label>", methods=["GET"])
    def api_store(self, request, label):
        session = require_session(request, self.accounts)
        store = actions.owned_store(self, session, label)
        return respond(request, {"label": label, "createdAt": unix_ms(store["created_at"]),
                                 "dicomweb": self.base(request, label),
                                 "apiKeys": self.accounts.api_keys(store["id"])})

    @app.route("/image-stores/<label>", methods=["DELETE"])
    def api_delete_store(self, request, label):
        session = changing(self, request)
        actions.delete_store(self, actions.owned_store(self, session, label))
        return _no_content(request)

    @app.route("/image-stores/<label>/api-keys", methods=["GET"])
    def api_keys(self, request, label):
        session = require_session(request, self.accounts)
        store = actions.owned_store(self, session, label)
        return respond(request, {"apiKeys": self.accounts.api_keys(store["id"])})

    @app.route("/image-stores/<label>/api-keys", methods=["POST"])
    def api_create_key(self, request, label):
        session = changing(self, request)
        store = actions.owned_store(self, session, label)
        body = _fields(read_json(request, required=False),
                       others=("name", "permissions", "expiresIn"))
        created = actions.create_key(self, store, body.get("name"), body.get("permissions"),
                                     body.get("expiresIn"))
        return respond(request, created, 201)

    @app.route("/image-stores/<label>/api-keys/<key_id>", methods=["DELETE"])
    def api_revoke_key(self, request, label, key_id):
        session = changing(self, request)
        actions.revoke_key(self, actions.owned_store(self, session, label), key_id)
        return _no_content(request)

    return cls
