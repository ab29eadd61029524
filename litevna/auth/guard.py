"""The route guard: credentials in, a Principal (or a 401/403) out.

SPEC §3: 401 when the credential is missing, malformed, badly signed, expired
or revoked; 403 when it is valid but for another store or lacks the
permission. The verified-signature cache and the short key-row cache keep the
per-request cost to a dictionary lookup when warm, while a revocation still
shows within ``key_cache_seconds``.
"""

from collections import OrderedDict
from dataclasses import dataclass

from litevna.auth.keys import InvalidToken

PERMISSIONS = ("read", "write", "delete")


class Unauthorized(Exception):
    """No valid credential (401)."""


class Forbidden(Exception):
    """A valid credential that may not do this (403)."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: the store, the key, and what it may do."""

    store_id: int
    label: str
    key_id: str
    permissions: frozenset
    expires_at: float | None = None

    def require(self, permission):
        if permission not in self.permissions:
            raise Forbidden(f"this key does not have the {permission!r} permission")


def bearer_token(authorization):
    """The token of an ``Authorization: Bearer T`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise Unauthorized("the Bearer credential is empty")
    return token


class Guard:
    """Checks credentials against the keyring and the index."""

    def __init__(self, keyring, lookup_key, lookup_store, clock, key_cache_seconds=0.5,
                 cache_size=10000):
        self._keyring = keyring
        self._lookup_key = lookup_key      # key id -> row (sync; called off the reactor)
        self._lookup_store = lookup_store  # label -> row
        self._clock = clock
        self._key_cache_seconds = key_cache_seconds
        self._claims = OrderedDict()
        self._keys = {}
        self._cache_size = cache_size

    def authenticate(self, token, label, permission):
        """The Principal for token acting on store label with permission."""
        if token is None:
            raise Unauthorized("authentication required: send Authorization: Bearer <token>")
        now = self._clock()
        claims = self._verified(token, now)
        key = self._key_row(claims.get("key"), now)
        if key is None or key["revoked_at"] is not None:
            raise Unauthorized("the API key has been revoked")
        if key["expires_at"] is not None and now >= key["expires_at"]:
            raise Unauthorized("the API key has expired")
        if claims["store"] != label:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        store = self._lookup_store(label)
        if store is None or store["id"] != key["store_id"]:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        allowed = frozenset(key["permissions"].split(",")) & frozenset(claims.get("perms", ()))
        principal = Principal(store["id"], label, key["id"], allowed, claims.get("exp"))
        principal.require(permission)
        return principal

    def _verified(self, token, now):
        claims = self._claims.get(token)
        if claims is None:
            try:
                claims = self._keyring.verify(token, now)
            except InvalidToken as exc:
                raise Unauthorized(str(exc)) from None
            if claims.get("typ") not in ("api-key", "token"):
                raise Unauthorized("not a LiteVNA API key or token")
            self._claims[token] = claims
            if len(self._claims) > self._cache_size:
                self._claims.popitem(last=False)
        elif claims.get("exp") is not None and now >= claims["exp"]:
            raise Unauthorized("the token has expired")
        return claims

    def _key_row(self, key_id, now):
        cached = self._keys.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = self._lookup_key(key_id) if isinstance(key_id, str) else None
        self._keys[key_id] = (now + self._key_cache_seconds, row)
        if len(self._keys) > self._cache_size:
            self._keys.clear()
        return row
