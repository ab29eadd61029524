"""What the JSON API and the pages both do, with the account rules' refusals as HTTPErrors.

Each function takes the Application (``app``: its accounts, tokens, guard and config)
and plain values, so a JSON body and an HTML form reach the same code.
"""

import os
import shutil

from litevna.accounts import AccountError
from litevna.auth.guard import PERMISSIONS
from litevna.auth.tokens import TokenError, parse_scopes, parse_ttl
from litevna.http.errors import HTTPError
from litevna.index import Conflict

WRONG_LOGIN = "wrong email or password"
#: Longest API key name kept (it is a label for people, shown in lists).
MAX_KEY_NAME = 200


def refused(fn, *args):
    """fn(*args), with AccountError as 400 and Conflict as 409."""
    try:
        return fn(*args)
    except Conflict as exc:
        raise HTTPError(409, str(exc)) from None
    except AccountError as exc:
        raise HTTPError(400, str(exc)) from None


def sign_up(app, email, password):
    """Create an account; its id."""
    return refused(app.accounts.create_account, email, password)


def log_in(app, email, password):
    """The account row for these credentials, or 401 (the same for an unknown email)."""
    account = app.accounts.authenticate(email, password)
    if account is None:
        raise HTTPError(401, WRONG_LOGIN)
    return account


def owned_store(app, session, label):
    """The store row of label if the session's account owns it; else 404, as for a
    store that does not exist (whose stores exist is nobody else's business)."""
    store = app.accounts.owned_store(session["account_id"], label)
    if store is None:
        raise HTTPError(404, f"you have no image store {label!r}")
    return store


def create_store(app, session, label):
    refused(app.accounts.create_store, label, session["email"])
    return label


def delete_store(app, store):
    """Delete a store: its index rows, then its blob folder (the index is the truth,
    so a crash between the two leaves only unreachable files)."""
    app.accounts.delete_store(store["id"])
    app.guard.forget()  # this process forgets the store's key rows now, not in 0.5 s
    shutil.rmtree(os.path.join(app.config.blob_dir, str(store["id"])), ignore_errors=True)


def key_options(name, permissions, expires_in):
    """(name, permissions, expires_in) checked for create_key: a name of at most
    MAX_KEY_NAME characters, a non-empty list of permissions (None: all), a positive
    whole number of seconds or None (no expiry)."""
    if name is None:
        name = ""
    if not isinstance(name, str) or len(name.strip()) > MAX_KEY_NAME:
        raise HTTPError(400, f"name is a text of at most {MAX_KEY_NAME} characters")
    if permissions is None:
        permissions = list(PERMISSIONS)
    if not isinstance(permissions, list) or not permissions or \
            not all(p in PERMISSIONS for p in permissions):
        raise HTTPError(400, f"permissions is a non-empty list of {', '.join(PERMISSIONS)}")
    if expires_in is not None and (isinstance(expires_in, bool)
                                   or not isinstance(expires_in, int) or expires_in <= 0):
        raise HTTPError(400, "expiresIn is a positive whole number of seconds")
    return name.strip(), tuple(p for p in PERMISSIONS if p in permissions), expires_in


def create_key(app, store, name, permissions, expires_in):
    """A new API key of store: {"id", "value" (shown once, never stored), "name",
    "permissions", "expiresAt"}."""
    name, permissions, expires_in = key_options(name, permissions, expires_in)
    created = refused(app.accounts.create_api_key, store["label"], name, permissions,
                      expires_in)
    return {**created, "name": name}


def revoke_key(app, store, key_id):
    """Revoke an API key of store (404 if it has none of that id) and every token
    derived from it."""
    try:
        app.accounts.revoke_api_key(store["label"], key_id)
    except AccountError as exc:
        raise HTTPError(404, str(exc)) from None
    app.guard.forget()


def create_token(app, store, key_id, ttl, scopes):
    """A token derived from one of the store's keys, minted for its logged-in owner:
    (ttl in seconds, {"token", "expiresAt", "scopes", "permissions"} of Tokens.derive)."""
    try:
        ttl, scope = parse_ttl(ttl), parse_scopes(scopes)
    except TokenError as exc:
        raise HTTPError(400, str(exc)) from None
    principal = refused(app.accounts.key_principal, store, key_id)
    return ttl, app.tokens.derive(principal, ttl, scope)

