"""The route guard: credentials in, a Principal (or a 401/403) out.

SPEC §3: 401 when the credential is missing, malformed, badly signed, expired
or revoked; 403 when it is valid but for another store or lacks the
permission. The verified-signature cache and the short key-row cache keep the
per-request cost to a dictionary lookup when warm, while a revocation still
shows within ``key_cache_seconds``.
"""

from collections import OrderedDict
from dataclasses import dataclass

from litevna.auth.keys import InvalidToken, TokenExpired

PERMISSIONS = ("read", "write", "delete")


class Unauthorized(Exception):
    """No valid credential (401)."""


class Expired(Unauthorized):
    """A well-signed value past its expiry (401; revoking one is a no-op)."""


class Forbidden(Exception):
    """A valid credential that may not do this (403)."""


@dataclass(frozen=True)
class Scope:
    """The studies and patients a scoped token may touch (SPEC §3: the union of both lists)."""

    study_ids: frozenset = frozenset()
    patient_ids: frozenset = frozenset()

    def allows(self, study_uid, patient_id):
        """True if a study (with its Patient ID) is inside the scope."""
        return study_uid in self.study_ids or (patient_id is not None
                                               and patient_id in self.patient_ids)

    def as_json(self):
        return {"study_ids": sorted(self.study_ids), "patient_ids": sorted(self.patient_ids)}

    @classmethod
    def from_claim(cls, claim):
        if claim is None:
            return None
        return cls(frozenset(claim.get("study_ids", ())), frozenset(claim.get("patient_ids", ())))


@dataclass(frozen=True)
class Principal:
    """Who is asking: the store, the key (and token), what it may do, and its scope."""

    store_id: int
    label: str
    key_id: str
    permissions: frozenset
    expires_at: float | None = None
    token_id: str | None = None  # the jti of a derived token; None for an API key
    scope: Scope | None = None   # None: the whole store

    def require(self, permission):
        if permission not in self.permissions:
            raise Forbidden(f"this token does not have the {permission!r} permission")


class Guard:
    """Checks credentials: signature (cached), key row and revocation list, store, permission."""

    def __init__(self, keyring, lookup_key, lookup_store, clock, revocations,
                 key_cache_seconds=0.5, cache_size=10000):
        self._keyring = keyring
        self._lookup_key = lookup_key      # key id -> row (sync)
        self._lookup_store = lookup_store  # label -> row
        self._clock = clock
        self._revocations = revocations
        self._key_cache_seconds = key_cache_seconds
        self._claims = OrderedDict()
        self._rows = {}
        self._cache_size = cache_size

    def authenticate(self, token, label, permission):
        """The Principal for token acting on store label with permission."""
        principal = self.principal(token, label)
        principal.require(permission)
        return principal

    def principal(self, token, label):
        """The Principal of a valid token for store label (any permission)."""
        if token is None:
            raise Unauthorized("authentication required: send Authorization: Bearer <token> "
                               "(or Basic, a key_<token> path segment, the litevna-token "
                               "cookie, or ?_auth_token=)")
        now = self._clock()
        claims = self.verified(token, now)
        key = self._row(self._lookup_key, claims.get("key"), now)
        if key is None or key["revoked_at"] is not None \
                or self._revocations.is_revoked("key:" + claims["key"]):
            raise Unauthorized("the API key has been revoked")
        if key["expires_at"] is not None and now >= key["expires_at"]:
            raise Unauthorized("the API key has expired")
        jti = claims.get("jti")
        if claims["typ"] == "token":
            if not isinstance(jti, str) or self._revocations.is_revoked("tok:" + jti):
                raise Unauthorized("the token has been revoked")
        if claims["store"] != label:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        store = self._row(self._lookup_store, label, now)
        if store is None or store["id"] != key["store_id"]:
            raise Forbidden(f"this token is for another image store, not {label!r}")
        allowed = frozenset(key["permissions"].split(",")) & frozenset(claims.get("perms", ()))
        return Principal(store["id"], label, key["id"], allowed, claims.get("exp"),
                         jti if claims["typ"] == "token" else None,
                         Scope.from_claim(claims.get("scope")))

    def verified(self, token, now):
        """The claims of a well-signed, unexpired LiteVNA value; Unauthorized otherwise."""
        claims = self._claims.get(token)
        if claims is None:
            try:
                claims = self._keyring.verify(token, now)
            except TokenExpired as exc:
                raise Expired(str(exc)) from None
            except InvalidToken as exc:
                raise Unauthorized(str(exc)) from None
            if claims.get("typ") not in ("api-key", "token") or \
                    not isinstance(claims.get("key"), str):
                raise Unauthorized("not a LiteVNA API key or token")
            self._claims[token] = claims
            if len(self._claims) > self._cache_size:
                self._claims.popitem(last=False)
        elif claims.get("exp") is not None and now >= claims["exp"]:
            raise Expired("the token has expired")
        return claims

    def forget(self):
        """Drop cached key and store rows (a revocation pushed from elsewhere)."""
        self._rows.clear()

    def _row(self, lookup, name, now):
        cached = self._rows.get((lookup, name))
        if cached is not None and cached[0] > now:
            return cached[1]
        row = lookup(name) if isinstance(name, str) else None
        if len(self._rows) > self._cache_size:
            self._rows.clear()
        self._rows[(lookup, name)] = (now + self._key_cache_seconds, row)
        return row
