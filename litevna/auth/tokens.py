"""Short-lived, scoped tokens derived from API keys, and their revocation (SPEC §3).

A token is a compact JWS like an API key, with ``typ: token``, the parent key's id
(so revoking the key kills it), a ``jti`` of its own (so it can be revoked alone),
an ``exp`` that never outlives the key and permissions that never exceed the key's.
"""

import re
import uuid

from litevna.auth.guard import PERMISSIONS, Expired, Forbidden
from litevna.auth.revocation import key_id as key_revocation
from litevna.auth.revocation import token_id as token_revocation

MAX_TTL = 86400
DEFAULT_TTL = 3600
#: A scope names at most this many studies and patients (it travels in every request).
MAX_SCOPE_ITEMS = 100
_UID = re.compile(r"[0-9]+(\.[0-9]+)*\Z")


class TokenError(ValueError):
    """A token request the rules refuse (400)."""


def parse_ttl(value):
    """Seconds from the request's ``ttl`` (1…86400, default 3600)."""
    if value is None:
        return DEFAULT_TTL
    # float.is_integer() is False for inf and nan, which int() cannot convert.
    whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not whole:
        raise TokenError("ttl is a whole number of seconds")
    if not 1 <= value <= MAX_TTL:
        raise TokenError(f"ttl is between 1 and {MAX_TTL} seconds")
    return int(value)


def parse_scopes(value):
    """{"study_ids": [...], "patient_ids": [...]} (sorted, unique) or None for no scope."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TokenError("scopes is an object with study_ids and/or patient_ids")
    unknown = set(value) - {"study_ids", "patient_ids"}
    if unknown:
        raise TokenError(f"unknown scopes: {', '.join(sorted(unknown))}")
    scope = {}
    for name in ("study_ids", "patient_ids"):
        items = value.get(name, [])
        if items is None:
            items = []
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise TokenError(f"scopes.{name} is a list of non-empty strings")
        if name == "study_ids" and not all(len(i) <= 64 and _UID.match(i) for i in items):
            raise TokenError("scopes.study_ids holds Study Instance UIDs (digits and dots)")
        if name == "patient_ids" and not all(len(i) <= 64 for i in items):
            raise TokenError("scopes.patient_ids holds Patient IDs of at most 64 characters")
        scope[name] = sorted(set(items))
    if not scope["study_ids"] and not scope["patient_ids"]:
        raise TokenError("scopes names no study and no patient: leave it out for the whole store")
    if len(scope["study_ids"]) + len(scope["patient_ids"]) > MAX_SCOPE_ITEMS:
        raise TokenError(f"scopes name at most {MAX_SCOPE_ITEMS} studies and patients")
    return scope


def parse_permissions(value, key_permissions):
    """The token's permissions: the key's, or a subset asked for (403 beyond them)."""
    if value is None:
        return [p for p in PERMISSIONS if p in key_permissions]
    if not isinstance(value, list) or not value or not all(p in PERMISSIONS for p in value):
        raise TokenError(f"permissions is a list of {', '.join(PERMISSIONS)}")
    beyond = set(value) - set(key_permissions)
    if beyond:
        raise Forbidden(f"the API key does not have {', '.join(sorted(beyond))}")
    return [p for p in PERMISSIONS if p in value]


class Tokens:
    """Creates and revokes tokens; the Guard checks them."""

    def __init__(self, keyring, guard, index, revocations, clock):
        self._keyring = keyring
        self._guard = guard
        self._index = index
        self._revocations = revocations
        self._clock = clock

    def create(self, label, api_key_value, ttl=None, scopes=None, permissions=None):
        """The client document's tokens/create: {"token", "expiresAt" (ms), "scopes"}."""
        if not isinstance(api_key_value, str) or not api_key_value:
            raise TokenError("api_key_value is the value of an API key of this store")
        ttl, scope = parse_ttl(ttl), parse_scopes(scopes)
        claims = self._guard.verified(api_key_value, self._clock())
        if claims["typ"] != "api-key":
            raise TokenError("api_key_value must be an API key, not a derived token")
        principal = self._guard.principal(api_key_value, label)
        return self.derive(principal, ttl, scope, permissions)

    def derive(self, principal, ttl, scope, permissions=None):
        """A token for an authenticated API key's Principal (the web UI calls this too)."""
        now = self._clock()
        perms = parse_permissions(permissions, principal.permissions)
        expires = now + ttl
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        claims = {"typ": "token", "store": principal.label, "key": principal.key_id,
                  "perms": perms, "jti": uuid.uuid4().hex, "iat": int(now), "exp": expires}
        if scope is not None:
            claims["scope"] = scope
        return {"token": self._keyring.sign(claims), "expiresAt": int(expires * 1000),
                "scopes": scope, "permissions": perms}

    def revoke(self, label, value):
        """Revoke a token (or, given an API key value, the key and all its tokens).

        Whoever holds a value may revoke it (as RFC 7009 lets a client). Revoking twice, or
        revoking an expired token, is not an error."""
        if not isinstance(value, str) or not value:
            raise TokenError("token is the value of a token or API key of this store")
        try:
            claims = self._guard.verified(value, self._clock())
        except Expired:
            return {"revoked": False, "reason": "the token has expired"}
        if claims["store"] != label:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        store = self._index.store_by_label(label)
        if store is None:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        if claims["typ"] == "api-key":
            if not self._index.revoke_api_key(store["id"], claims["key"], self._clock()):
                raise Forbidden(f"this token is for another image store, not {label!r}")
            self._revocations.revoke(key_revocation(claims["key"]), store["id"],
                                     claims.get("exp"))
            self._guard.forget()
            return {"revoked": True, "type": "api-key", "id": claims["key"]}
        self._revocations.revoke(token_revocation(claims["jti"]), store["id"], claims["exp"])
        return {"revoked": True, "type": "token", "id": claims["jti"]}
