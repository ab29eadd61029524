"""The account domain: accounts, image stores and API keys (SPEC §2)."""

import functools
import hashlib
import re
import secrets
import uuid

from litevna.auth.guard import PERMISSIONS, Principal
from litevna.auth.passwords import check_password, hash_password
from litevna.auth.revocation import IndexRevocations
from litevna.auth.revocation import key_id as key_revocation
from litevna.index import Conflict

_LABEL = re.compile(r"[a-z][a-z0-9-]{2,62}\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\Z")
#: How long a web UI session lasts after logging in.
SESSION_SECONDS = 14 * 86400

#: First path segments the server itself uses; a store label may not take them.
RESERVED_LABELS = frozenset({
    "image-stores", "accounts", "login", "logout", "signup", "static", "healthz", "readyz",
    "metrics", "uploads", "upload", "api", "ui", "stores", "favicon.ico", "robots.txt",
    "dicomweb", "admin", "assets", "viewer", "tokens",
})


class AccountError(ValueError):
    """A request the account rules refuse (400), or a taken name (Conflict, 409)."""


def check_label(label):
    """Raise AccountError unless label is a valid store label (SPEC §2)."""
    if not _LABEL.match(label or ""):
        raise AccountError("a label is 3-63 characters of a-z, 0-9 and '-', starting with a letter")
    if label in RESERVED_LABELS:
        raise AccountError(f"the label {label!r} is reserved")


def session_key(value):
    """What the index keeps of a session cookie value: its SHA-256, so a copy of the
    index lets nobody in."""
    return hashlib.sha256(value.encode()).hexdigest()


@functools.cache
def _decoy_hash():
    """A hash that no password matches, checked when the email is unknown."""
    return hash_password(secrets.token_urlsafe(16))


def unix_ms(seconds):
    """Unix milliseconds (the API's instants) from Unix seconds; None stays None."""
    return int(seconds * 1000) if seconds is not None else None


def parse_permissions(text):
    """A tuple of permissions from 'read,write,delete'."""
    perms = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in perms if p not in PERMISSIONS]
    if unknown or not perms:
        raise AccountError(f"permissions are a list of {', '.join(PERMISSIONS)}")
    return tuple(p for p in PERMISSIONS if p in perms)


class Accounts:
    """Operations on accounts, stores and keys over an IIndex and a Keyring."""

    def __init__(self, index, keyring, clock, revocations=None):
        self._index = index
        self._keyring = keyring
        self._clock = clock
        self._revocations = revocations if revocations is not None else \
            IndexRevocations(index, clock)

    def create_account(self, email, password):
        email = (email or "").strip().lower()
        if not _EMAIL.match(email):
            raise AccountError(f"{email!r} is not an email address")
        if len(password or "") < 8:
            raise AccountError("a password has at least 8 characters")
        try:
            return self._index.create_account(email, hash_password(password))
        except Conflict:
            raise Conflict(f"an account for {email} already exists") from None

    def create_store(self, label, owner_email):
        check_label(label)
        owner = self._index.account_by_email((owner_email or "").strip().lower())
        if owner is None:
            raise AccountError(f"no account {owner_email!r}")
        try:
            return self._index.create_store(label, owner["id"])
        except Conflict:
            raise Conflict(f"the label {label!r} is taken") from None

    def store(self, label):
        store = self._index.store_by_label(label)
        if store is None:
            raise AccountError(f"no image store {label!r}")
        return store

    def create_api_key(self, label, name="", permissions=PERMISSIONS, expires_in=None):
        """A new key; its value is returned here and never stored."""
        store = self.store(label)
        now = self._clock()
        if expires_in is not None and expires_in <= 0:
            raise AccountError("expires-in must be a positive number of seconds")
        expires_at = now + expires_in if expires_in else None
        key_id = uuid.uuid4().hex
        self._index.create_api_key(key_id, store["id"], name or "", permissions, expires_at)
        claims = {"typ": "api-key", "store": label, "key": key_id, "perms": list(permissions),
                  "iat": int(now)}
        if expires_at is not None:
            claims["exp"] = expires_at  # a NumericDate may have a fraction: no early death
        return {"id": key_id, "value": self._keyring.sign(claims),
                "permissions": list(permissions),
                "expiresAt": int(expires_at * 1000) if expires_at is not None else None}

    def revoke_api_key(self, label, key_id):
        """Revoke a key, and with it every token derived from it (SPEC §3)."""
        store = self.store(label)
        if not self._index.revoke_api_key(store["id"], key_id, self._clock()):
            raise AccountError(f"store {label!r} has no API key {key_id!r}")
        row = self._index.api_key(key_id)
        return self._revocations.revoke(key_revocation(key_id), store["id"], row["expires_at"])

    def list_stores(self):
        return [{"label": s["label"], "owner": s["owner"], "createdAt": int(s["created_at"] * 1000)}
                for s in self._index.list_stores()]

    def authenticate(self, email, password):
        """The account row of email if password is its password, else None.

        An unknown email costs a scrypt check too, so the answer's timing does not tell
        which emails have accounts."""
        account = self._index.account_by_email((email or "").strip().lower())
        encoded = account["password_hash"] if account is not None else _decoy_hash()
        if not check_password(password or "", encoded) or account is None:
            return None
        return account

    def open_session(self, account_id):
        """A new web session: {"value" (for the cookie; only its hash is kept), "csrf",
        "expires_at"}."""
        value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires_at = self._clock() + SESSION_SECONDS
        self._index.create_session(session_key(value), account_id, csrf, expires_at)
        return {"value": value, "csrf": csrf, "expires_at": expires_at}

    def session(self, value):
        """The live session row (with the account's email) of a cookie value, or None."""
        if not value:
            return None
        row = self._index.session(session_key(value))
        if row is None or row["expires_at"] <= self._clock():
            return None
        return row

    def close_session(self, value):
        self._index.delete_session(session_key(value))

    def stores_of(self, account_id):
        """[{"label", "createdAt" (ms)}] of the stores an account owns."""
        return [{"label": s["label"], "createdAt": unix_ms(s["created_at"])}
                for s in self._index.stores_of(account_id)]

    def owned_store(self, account_id, label):
        """The store row of label if account_id owns it, else None: to anyone else a
        store they do not own does not exist."""
        store = self._index.store_by_label(label)
        if store is None or store["owner_id"] != account_id:
            return None
        return store

    def api_keys(self, store_id):
        """The keys of a store as the owner sees them: everything but the value, which
        is never stored; ``active`` while neither revoked nor expired."""
        now = self._clock()
        return [{"id": k["id"], "name": k["name"], "permissions": k["permissions"].split(","),
                 "createdAt": unix_ms(k["created_at"]), "expiresAt": unix_ms(k["expires_at"]),
                 "revokedAt": unix_ms(k["revoked_at"]),
                 "active": k["revoked_at"] is None and (k["expires_at"] is None
                                                        or k["expires_at"] > now)}
                for k in self._index.api_keys_of(store_id)]

    def delete_store(self, store_id):
        """Delete a store's index rows: its studies, keys (so their tokens die) and
        revocations go with it."""
        self._index.delete_store(store_id)

    def key_principal(self, store, key_id):
        """The Principal of a live API key of store: a logged-in owner may derive tokens
        from it without its value, which the server does not have."""
        row = self._index.api_key(key_id or "")
        if row is None or row["store_id"] != store["id"]:
            raise AccountError(f"store {store['label']!r} has no API key {key_id!r}")
        if row["revoked_at"] is not None:
            raise AccountError("this API key has been revoked")
        if row["expires_at"] is not None and row["expires_at"] <= self._clock():
            raise AccountError("this API key has expired")
        return Principal(store["id"], store["label"], row["id"],
                         frozenset(row["permissions"].split(",")), row["expires_at"])
