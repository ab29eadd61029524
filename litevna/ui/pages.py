"""The web pages (SPEC §2): server-rendered forms, and two pages whose script reads
the store over DICOMweb.

Pages are Jinja2 templates with autoescaping; their one stylesheet and one script
are served from ``/static/`` under a content-hash query, so they can be cached for
good. No page has inline script, and every page says so in its
Content-Security-Policy. The study browser and the viewer fetch
``/{label}/dicomweb/…`` with the ``litevna-token`` cookie that "Create token" sets:
the session cookie never authorises DICOMweb (SPEC §3).
"""

import datetime
import functools
import hashlib
import importlib.resources
import os
import re

import jinja2

from litevna.accounts import unix_ms
from litevna.auth.credentials import COOKIE as TOKEN_COOKIE
from litevna.auth.guard import PERMISSIONS
from litevna.auth.tokens import DEFAULT_TTL
from litevna.dicomweb.wado import check_uids
from litevna.http.errors import HTTPError
from litevna.ui import actions
from litevna.ui.session import (CSRF_FIELD, SESSION_COOKIE, Form, check_csrf,
                                check_form_token, clear_cookie, cookie_value,
                                current_session, form_token, set_cookie, start_session)

CSP = (b"default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
       b"form-action 'self'; frame-ancestors 'none'")
#: Choices of the key form's expiry: (seconds or "" for never, shown as).
KEY_EXPIRIES = (("", "never"), ("86400", "1 day"), ("604800", "7 days"),
                ("2592000", "30 days"), ("31536000", "1 year"))
#: Choices of the token form's lifetime (SPEC §3: at most a day).
TOKEN_TTLS = ((900, "15 minutes"), (DEFAULT_TTL, "1 hour"), (28800, "8 hours"),
              (86400, "24 hours"))
#: An anonymous form whose double-submit cookie is gone (it lives FORM_SECONDS).
EXPIRED_FORM = "The form had expired: please try again."
_LIST_SEPARATORS = re.compile(r"[\s,]+")

_STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}


def _load_static():
    """{name: (bytes, media type, version)} of the files in static/, read once."""
    folder = importlib.resources.files("litevna.ui") / "static"
    assets = {}
    for entry in folder.iterdir():
        suffix = os.path.splitext(entry.name)[1]
        if suffix in _STATIC_TYPES:
            data = entry.read_bytes()
            assets[entry.name] = (data, _STATIC_TYPES[suffix],
                                  hashlib.sha256(data).hexdigest()[:16])
    return assets


_STATIC = _load_static()


def static_url(name):
    """The URL of a static file, versioned by its content."""
    return f"/static/{name}?v={_STATIC[name][2]}"


def _when(ms):
    """A Unix-ms instant for people: '2025-05-01 14:03 UTC', or 'never'."""
    if ms is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("litevna.ui", "templates"),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_templates.globals.update(static_url=static_url, csrf_field=CSRF_FIELD)
_templates.filters["when"] = _when


def render(request, template, status=200, **context):
    """A page: the template filled in, with the headers every page carries."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"same-origin")
    # Pages hold CSRF tokens and, once, key values: never kept by a cache.
    request.setHeader(b"Cache-Control", b"no-store")
    context.setdefault("session", None)
    return _templates.get_template(template).render(**context).encode("utf-8")


def redirect(request, location):
    """303 See Other: after a form post, the browser GETs the page it should show."""
    request.setResponseCode(303)
    request.setHeader(b"Location", location.encode("utf-8"))
    request.setHeader(b"Cache-Control", b"no-store")
    return b""


def page(posted=False):
    """Decorate a page route: it gets the live session (no session: to the log-in
    page), a posted form is CSRF-checked first, and an HTTPError becomes the error
    page with its status."""
    def decorate(route):
        @functools.wraps(route)
        def wrapper(self, request, *args, **kwargs):
            session = current_session(request, self.accounts)
            if session is None:
                return redirect(request, "/login")
            try:
                if posted:
                    form = Form(request)
                    check_csrf(session, form.get(CSRF_FIELD))
                    kwargs["form"] = form
                return route(self, request, session, *args, **kwargs)
            except HTTPError as error:
                return _error_page(request, session, error)
        return wrapper
    return decorate


def _error_page(request, session, error):
    return render(request, "error.html", error.status, session=session, code=error.status,
                  message=error.message)


def _anonymous(template):
    """Render an anonymous form's page (sign-up, log-in) with its double-submit token."""
    def show(self, request, status=200, message=None, email=""):
        token = form_token(request, self.config.public_url)
        return render(request, template, status, csrf=token, message=message, email=email)
    return show


_login_page = _anonymous("login.html")
_signup_page = _anonymous("signup.html")


def log_in_form(self, request):
    """POST /login from the log-in page: on to the stores, or the page again with why."""
    form = Form(request)
    try:
        check_form_token(request, form)
    except HTTPError:
        return _login_page(self, request, 403, EXPIRED_FORM, form.get("email"))
    try:
        account = actions.log_in(self, form.get("email"), form.get("password"))
    except HTTPError as error:
        return _login_page(self, request, error.status, error.message, form.get("email"))
    start_session(request, self.accounts, account["id"], self.config.public_url)
    return redirect(request, "/ui/stores")


def log_out_form(self, request):
    """POST /logout from a page's button: end the session, back to the log-in page."""
    session = current_session(request, self.accounts)
    if session is not None:
        try:
            check_csrf(session, Form(request).get(CSRF_FIELD))
        except HTTPError as error:
            return _error_page(request, session, error)
        self.accounts.close_session(cookie_value(request, SESSION_COOKIE))
    clear_cookie(request, SESSION_COOKIE, self.config.public_url)
    return redirect(request, "/login")


def _show_store(self, request, session, store, status=200, message=None, new_key=None,
                new_token=None):
    """The store page, with what a form post just made (its only showing) or why not."""
    return render(request, "store.html", status, session=session, label=store["label"],
                  created_at=unix_ms(store["created_at"]),
                  dicomweb=self.base(request, store["label"]),
                  keys=self.accounts.api_keys(store["id"]), permissions=PERMISSIONS,
                  key_expiries=KEY_EXPIRIES, token_ttls=TOKEN_TTLS, default_ttl=DEFAULT_TTL,
                  message=message, new_key=new_key, new_token=new_token)


def _show_stores(self, request, session, status=200, message=None, label=""):
    return render(request, "stores.html", status, session=session, message=message,
                  label=label, stores=self.accounts.stores_of(session["account_id"]))


def _id_list(text):
    return [item for item in _LIST_SEPARATORS.split(text or "") if item]


def _number(text, what):
    try:
        return int(text)
    except ValueError:
        raise HTTPError(400, f"{what} is a whole number of seconds") from None


def add_routes(cls):
    """Add the page routes and /static/ to the Application class."""
    app = cls.app

    @app.route("/", methods=["GET"])
    def ui_home(self, request):
        if current_session(request, self.accounts) is None:
            return redirect(request, "/login")
        return redirect(request, "/ui/stores")

    @app.route("/login", methods=["GET"])
    def ui_login_page(self, request):
        if current_session(request, self.accounts) is not None:
            return redirect(request, "/ui/stores")
        return _login_page(self, request)

    @app.route("/signup", methods=["GET"])
    def ui_signup_page(self, request):
        if current_session(request, self.accounts) is not None:
            return redirect(request, "/ui/stores")
        return _signup_page(self, request)

    @app.route("/signup", methods=["POST"])
    def ui_sign_up(self, request):
        form = Form(request)
        email = form.get("email")
        try:
            check_form_token(request, form)
        except HTTPError:
            return _signup_page(self, request, 403, EXPIRED_FORM, email)
        if form.get("password") != form.get("password2"):
            return _signup_page(self, request, 400, "The two passwords differ.", email)
        try:
            account_id = actions.sign_up(self, email, form.get("password"))
        except HTTPError as error:
            return _signup_page(self, request, error.status, error.message, email)
        start_session(request, self.accounts, account_id, self.config.public_url)
        return redirect(request, "/ui/stores")

    @app.route("/ui/stores", methods=["GET"])
    @page()
    def ui_stores(self, request, session):
        return _show_stores(self, request, session)

    @app.route("/ui/stores", methods=["POST"])
    @page(posted=True)
    def ui_create_store(self, request, session, form):
        label = form.get("label").strip()
        try:
            actions.create_store(self, session, label)
        except HTTPError as error:
            return _show_stores(self, request, session, error.status, error.message, label)
        return redirect(request, f"/ui/stores/{label}")

    @app.route("/ui/stores/<label>", methods=["GET"])
    @page()
    def ui_store(self, request, session, label):
        return _show_store(self, request, session, actions.owned_store(self, session, label))

    @app.route("/ui/stores/<label>/delete", methods=["POST"])
    @page(posted=True)
    def ui_delete_store(self, request, session, form, label):
        actions.delete_store(self, actions.owned_store(self, session, label))
        return redirect(request, "/ui/stores")

    @app.route("/ui/stores/<label>/api-keys", methods=["POST"])
    @page(posted=True)
    def ui_create_key(self, request, session, form, label):
        store = actions.owned_store(self, session, label)
        expires = form.get("expires_in")
        try:
            created = actions.create_key(self, store, form.get("name"),
                                         form.getall("permissions"),
                                         _number(expires, "the expiry") if expires else None)
        except HTTPError as error:
            return _show_store(self, request, session, store, error.status,
                               message=error.message)
        return _show_store(self, request, session, store, new_key=created)

    @app.route("/ui/stores/<label>/api-keys/<key_id>/revoke", methods=["POST"])
    @page(posted=True)
    def ui_revoke_key(self, request, session, form, label, key_id):
        actions.revoke_key(self, actions.owned_store(self, session, label), key_id)
        return redirect(request, f"/ui/stores/{label}")

    @app.route("/ui/stores/<label>/tokens", methods=["POST"])
    @page(posted=True)
    def ui_create_token(self, request, session, form, label):
        store = actions.owned_store(self, session, label)
        study_ids, patient_ids = _id_list(form.get("study_ids")), _id_list(form.get("patient_ids"))
        scopes = {"study_ids": study_ids, "patient_ids": patient_ids} \
            if study_ids or patient_ids else None
        try:
            ttl, token = actions.create_token(self, store, form.get("key_id"),
                                              _number(form.get("ttl"), "the lifetime"), scopes)
        except HTTPError as error:
            return _show_store(self, request, session, store, error.status,
                               message=error.message)
        # Lax, not Strict: a link to a study from elsewhere still opens with the cookie.
        set_cookie(request, TOKEN_COOKIE, token["token"], ttl, self.config.public_url,
                   same_site="lax", path=f"/{label}/".encode())
        return _show_store(self, request, session, store, new_token=token)

    @app.route("/ui/stores/<label>/studies", methods=["GET"])
    @page()
    def ui_studies(self, request, session, label):
        actions.owned_store(self, session, label)
        return render(request, "studies.html", session=session, label=label)

    @app.route("/ui/stores/<label>/viewer", methods=["GET"])
    @page()
    def ui_viewer(self, request, session, label):
        actions.owned_store(self, session, label)
        study = (request.args.get(b"study") or [b""])[0].decode("latin-1")
        series = (request.args.get(b"series") or [b""])[0].decode("latin-1")
        if not study or not series:
            raise HTTPError(400, "open the viewer from a series of the study browser")
        check_uids(study, series)
        return render(request, "viewer.html", session=session, label=label, study=study,
                      series=series)

    @app.route("/static/<name>", methods=["GET"])
    def ui_static(self, request, name):
        if name not in _STATIC:
            raise HTTPError(404, "no such file")
        data, media_type, version = _STATIC[name]
        request.setHeader(b"Content-Type", media_type)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        # Pages ask for ?v=<content hash>: that URL's content never changes.
        current = (request.args.get(b"v") or [b""])[0] == version.encode()
        request.setHeader(b"Cache-Control", b"public, max-age=31536000, immutable"
                          if current else b"no-cache")
        return data

    return cls
