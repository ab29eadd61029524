"""The account domain: accounts, image stores and API keys (SPEC §2)."""

import re
import uuid

from litevna.auth.guard import PERMISSIONS
from litevna.auth.passwords import hash_password
from litevna.auth.revocation import IndexRevocations
from litevna.auth.revocation import key_id as key_revocation
from litevna.index import Conflict

_LABEL = re.compile(r"[a-z][a-z0-9-]{2,62}\Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\Z")

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
            claims["exp"] = int(expires_at)
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
