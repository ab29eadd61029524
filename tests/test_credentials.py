"""Where a request carries its token (litevna.auth.credentials) and the token request
rules (litevna.auth.tokens): units over a fake request and a fake clock, no server."""

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from litevna.accounts import Accounts
from litevna.auth.credentials import request_token
from litevna.auth.guard import Forbidden, Guard, Unauthorized
from litevna.auth.keys import Keyring
from litevna.auth.revocation import IndexRevocations
from litevna.auth.tokens import (
    DEFAULT_TTL, MAX_SCOPE_ITEMS, MAX_TTL, TokenError, Tokens, parse_permissions, parse_scopes,
    parse_ttl,
)
from litevna.index.sqlite import SqliteIndex
from helpers import FakeClock

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJ0eXAiOiJ0b2tlbiJ9.c2lnbmF0dXJl"
OTHER = "eyJvdGhlciJ9.eyJvdGhlciJ9.b3RoZXI"
UID = "1.2.826.0.1.3680043.10.1"


class FakeRequest:
    """What request_token reads of a StreamingRequest."""

    def __init__(self, authorization=None, path_token=None, cookie=None, query_token=None):
        self.requestHeaders = Headers()
        if authorization is not None:
            values = authorization if isinstance(authorization, list) else [authorization]
            self.requestHeaders.setRawHeaders(b"authorization", values)
        self.path_token = path_token
        self.query_token = query_token
        self._cookies = {} if cookie is None else {b"litevna-token": cookie}

    def getCookie(self, name):
        return self._cookies.get(name)


def basic(raw):
    return b"Basic " + base64.b64encode(raw if isinstance(raw, bytes) else raw.encode())


class MethodTests(SynchronousTestCase):
    """Each of the five methods of the client's document, alone."""

    def test_none(self):
        self.assertIsNone(request_token(FakeRequest()))

    def test_bearer(self):
        for value in (b"Bearer " + TOKEN.encode(), b"bearer " + TOKEN.encode(),
                      b"BEARER   " + TOKEN.encode() + b"  ", b"  Bearer " + TOKEN.encode()):
            self.assertEqual(request_token(FakeRequest(value)), TOKEN, value)

    def test_basic(self):
        self.assertEqual(request_token(FakeRequest(basic("litevna:" + TOKEN))), TOKEN)
        self.assertEqual(request_token(FakeRequest(b"basic " + basic("litevna:" + TOKEN)[6:])),
                         TOKEN)
        # Only the first colon separates the user name from the password.
        self.assertEqual(request_token(FakeRequest(basic("litevna:a:b"))), "a:b")

    def test_path(self):
        self.assertEqual(request_token(FakeRequest(path_token=TOKEN)), TOKEN)

    def test_cookie(self):
        for value in (TOKEN.encode(), b'"' + TOKEN.encode() + b'"', b" " + TOKEN.encode()):
            self.assertEqual(request_token(FakeRequest(cookie=value)), TOKEN, value)

    def test_query(self):
        self.assertEqual(request_token(FakeRequest(query_token=TOKEN.encode())), TOKEN)
        self.assertEqual(request_token(FakeRequest(query_token=TOKEN)), TOKEN)


class MalformedTests(SynchronousTestCase):
    """A malformed credential is a 401, whichever method carries it."""

    def assertUnauthorized(self, request):
        self.assertRaises(Unauthorized, request_token, request)

    def test_bearer(self):
        for value in (b"Bearer", b"Bearer ", b"Bearer \xc3\xa9", b"Bearer \xff" + TOKEN.encode(),
                      b"Token " + TOKEN.encode(), b"Bearer" + TOKEN.encode(), b"Digest x=y",
                      b"\xff"):
            self.assertUnauthorized(FakeRequest(value))

    def test_basic(self):
        for value in (b"Basic !!!", b"Basic", b"Basic " + base64.b64encode(b"litevna:x")[:-1],
                      basic("admin:" + TOKEN), basic("LITEVNA:" + TOKEN), basic(":" + TOKEN),
                      basic(TOKEN), basic("litevna:"), basic(b"litevna:\xc3\xa9"),
                      basic(b"\xfflitevna:" + TOKEN.encode())):
            self.assertUnauthorized(FakeRequest(value))

    def test_two_authorization_headers(self):
        value = b"Bearer " + TOKEN.encode()
        self.assertUnauthorized(FakeRequest([value, value]))

    def test_empty(self):
        self.assertUnauthorized(FakeRequest(path_token=""))
        self.assertUnauthorized(FakeRequest(cookie=b""))
        self.assertUnauthorized(FakeRequest(cookie=b'""'))
        self.assertUnauthorized(FakeRequest(query_token=b""))

    def test_not_ascii(self):
        self.assertUnauthorized(FakeRequest(cookie=b"\xc3\xa9"))
        self.assertUnauthorized(FakeRequest(query_token=b"\xe2\x82\xac"))
        self.assertUnauthorized(FakeRequest(query_token="\xe9"))


class OrderTests(SynchronousTestCase):
    """SPEC §3: Authorization, path, cookie, query; the first present is judged."""

    def test_first_present_wins(self):
        everything = dict(authorization=b"Bearer A", path_token="B", cookie=b"C",
                          query_token=b"D")
        self.assertEqual(request_token(FakeRequest(**everything)), "A")
        del everything["authorization"]
        self.assertEqual(request_token(FakeRequest(**everything)), "B")
        del everything["path_token"]
        self.assertEqual(request_token(FakeRequest(**everything)), "C")
        del everything["cookie"]
        self.assertEqual(request_token(FakeRequest(**everything)), "D")

    def test_invalid_never_skipped(self):
        for request in (
                FakeRequest(authorization=b"Bearer", path_token=TOKEN),
                FakeRequest(authorization=basic("admin:" + TOKEN), cookie=TOKEN.encode()),
                FakeRequest(authorization=b"Token x", query_token=TOKEN.encode()),
                FakeRequest(path_token="", cookie=TOKEN.encode()),
                FakeRequest(path_token="", query_token=TOKEN.encode()),
                FakeRequest(cookie=b"", query_token=TOKEN.encode()),
                FakeRequest(cookie=b"\xff", query_token=TOKEN.encode())):
            self.assertRaises(Unauthorized, request_token, request)

    def test_later_invalid_ignored(self):
        request = FakeRequest(authorization=b"Bearer " + TOKEN.encode(), path_token="",
                              cookie=b"\xff", query_token=b"")
        self.assertEqual(request_token(request), TOKEN)


_header = st.binary(max_size=200) | st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from([b"Bearer ", b"Basic ", b"bearer", b"BASIC  ", b""]),
    st.binary(max_size=100) | st.builds(base64.b64encode, st.binary(max_size=60)))


class PropertyTests(SynchronousTestCase):
    """Whatever a client sends, request_token answers None, a token, or Unauthorized."""

    def check(self, request):
        try:
            token = request_token(request)
        except Unauthorized:
            return
        if token is not None:
            self.assertIsInstance(token, str)
            self.assertTrue(token)

    @settings(max_examples=300, deadline=None)
    @given(_header)
    def test_any_authorization(self, value):
        self.check(FakeRequest(value))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=40), min_size=1, max_size=3),
           st.none() | st.text(max_size=40), st.none() | st.binary(max_size=40),
           st.none() | st.binary(max_size=40) | st.text(max_size=40))
    def test_any_combination(self, authorizations, path_token, cookie, query_token):
        self.check(FakeRequest(authorizations, path_token, cookie, query_token))

    @settings(max_examples=200, deadline=None)
    @given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                   max_size=80))
    def test_basic_round_trip(self, token):
        self.assertEqual(request_token(FakeRequest(basic("litevna:" + token))), token)
        self.assertEqual(request_token(FakeRequest(b"Bearer " + token.encode())), token)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=4),
    max_leaves=10)


class TtlTests(SynchronousTestCase):
    def test_default(self):
        self.assertEqual(parse_ttl(None), DEFAULT_TTL)
        self.assertEqual(DEFAULT_TTL, 3600)

    def test_bounds(self):
        for value, seconds in ((1, 1), (MAX_TTL, 86400), (60.0, 60), (3600, 3600)):
            self.assertEqual(parse_ttl(value), seconds)
            self.assertIs(type(parse_ttl(value)), int)

    def test_refused(self):
        for value in (0, -1, 86401, 10 ** 30, 1.5, 0.5, 86400.5, "abc", "60", "", True, False,
                      [], [60], {}, float("inf"), float("-inf"), float("nan"), 2 ** 2000):
            self.assertRaises(TokenError, parse_ttl, value)

    @settings(max_examples=300, deadline=None)
    @given(_json)
    def test_any_json_value(self, value):
        try:
            seconds = parse_ttl(value)
        except TokenError:
            return
        self.assertTrue(1 <= seconds <= MAX_TTL)


class ScopeTests(SynchronousTestCase):
    def test_none(self):
        self.assertIsNone(parse_scopes(None))

    def test_sorted_unique(self):
        self.assertEqual(parse_scopes({"study_ids": ["1.3", "1.2", "1.3"], "patient_ids": None}),
                         {"study_ids": ["1.2", "1.3"], "patient_ids": []})
        self.assertEqual(parse_scopes({"patient_ids": ["P2", "P1"]}),
                         {"study_ids": [], "patient_ids": ["P1", "P2"]})

    def test_refused(self):
        for value in ([], "1.2", 7, {}, {"study_ids": []}, {"study_ids": [], "patient_ids": []},
                      {"series_ids": ["1.2"]}, {"study_ids": "1.2"}, {"study_ids": [1]},
                      {"study_ids": [""]}, {"study_ids": ["1.2.x"]}, {"study_ids": ["1..2"]},
                      {"study_ids": ["1." * 40 + "1"]}, {"patient_ids": ["x" * 65]},
                      {"patient_ids": [None]}, {"patient_ids": {"a": 1}},
                      {"patient_ids": [f"P{i}" for i in range(MAX_SCOPE_ITEMS + 1)]},
                      {"study_ids": [UID], "patient_ids": [f"P{i}" for i in
                                                           range(MAX_SCOPE_ITEMS)]}):
            self.assertRaises(TokenError, parse_scopes, value)

    def test_at_most(self):
        items = [f"P{i}" for i in range(MAX_SCOPE_ITEMS)]
        self.assertEqual(len(parse_scopes({"patient_ids": items})["patient_ids"]),
                         MAX_SCOPE_ITEMS)

    @settings(max_examples=300, deadline=None)
    @given(_json)
    def test_any_json_value(self, value):
        try:
            scope = parse_scopes(value)
        except TokenError:
            return
        if scope is not None:
            self.assertEqual(set(scope), {"study_ids", "patient_ids"})


class PermissionTests(SynchronousTestCase):
    def test_the_keys_by_default(self):
        self.assertEqual(parse_permissions(None, ("delete", "read")), ["read", "delete"])

    def test_narrowing(self):
        self.assertEqual(parse_permissions(["delete", "read", "read"], ("read", "write",
                                                                         "delete")),
                         ["read", "delete"])

    def test_beyond_the_key(self):
        self.assertRaises(Forbidden, parse_permissions, ["read", "write"], ("read",))

    def test_refused(self):
        for value in ([], "read", ["admin"], ["read", 1], [["read"]], {"read": True}, 1):
            self.assertRaises(TokenError, parse_permissions, value, ("read", "write"))

    @settings(max_examples=300, deadline=None)
    @given(_json, st.sets(st.sampled_from(["read", "write", "delete"])))
    def test_any_json_value(self, value, key_permissions):
        try:
            permissions = parse_permissions(value, key_permissions)
        except (TokenError, Forbidden):
            return
        self.assertTrue(set(permissions) <= key_permissions)


class TokensTests(SynchronousTestCase):
    """tokens/create and tokens/revoke over an in-memory index and a fake clock."""

    def setUp(self):
        self.clock = FakeClock()
        index = SqliteIndex(":memory:")
        index.migrate()
        ring = Keyring(self.mktemp())
        self.revocations = IndexRevocations(index, self.clock)
        self.accounts = Accounts(index, ring, self.clock, self.revocations)
        self.accounts.create_account("a@example.org", "long enough")
        self.accounts.create_store("demo", "a@example.org")
        self.accounts.create_store("other", "a@example.org")
        self.guard = Guard(ring, index.api_key, index.store_by_label, self.clock,
                           self.revocations)
        self.tokens = Tokens(ring, self.guard, index, self.revocations, self.clock)
        self.key = self.accounts.create_api_key("demo")["value"]

    def test_never_outlives_the_key(self):
        key = self.accounts.create_api_key("demo", expires_in=60)
        made = self.tokens.create("demo", key["value"], ttl=MAX_TTL)
        self.assertLessEqual(made["expiresAt"], key["expiresAt"])
        self.clock.now += 61
        self.assertRaises(Unauthorized, self.guard.authenticate, made["token"], "demo", "read")

    def test_expires_after_ttl(self):
        made = self.tokens.create("demo", self.key, ttl=10)
        self.assertEqual(made["expiresAt"], int((self.clock.now + 10) * 1000))
        self.guard.authenticate(made["token"], "demo", "read")
        self.clock.now += 10
        self.assertRaises(Unauthorized, self.guard.authenticate, made["token"], "demo", "read")

    def test_permissions_and_scope_carried(self):
        made = self.tokens.create("demo", self.key, scopes={"study_ids": [UID]},
                                  permissions=["read"])
        principal = self.guard.principal(made["token"], "demo")
        self.assertEqual(principal.permissions, frozenset({"read"}))
        self.assertEqual(principal.scope.study_ids, frozenset({UID}))
        self.assertRaises(Forbidden, self.guard.authenticate, made["token"], "demo", "write")

    def test_create_refused(self):
        derived = self.tokens.create("demo", self.key)["token"]
        self.assertRaises(TokenError, self.tokens.create, "demo", derived)
        self.assertRaises(TokenError, self.tokens.create, "demo", None)
        self.assertRaises(TokenError, self.tokens.create, "demo", "")
        self.assertRaises(Unauthorized, self.tokens.create, "demo", "garbage")
        self.assertRaises(Forbidden, self.tokens.create, "other", self.key)
        self.assertRaises(Forbidden, self.tokens.create, "demo",
                          self.accounts.create_api_key("demo", permissions=("read",))["value"],
                          permissions=["write"])

    def test_revoke_token_twice(self):
        token = self.tokens.create("demo", self.key)["token"]
        self.assertTrue(self.tokens.revoke("demo", token)["revoked"])
        self.assertTrue(self.tokens.revoke("demo", token)["revoked"])
        self.assertRaises(Unauthorized, self.guard.authenticate, token, "demo", "read")
        self.guard.authenticate(self.key, "demo", "read")

    def test_revoke_key_revokes_its_tokens(self):
        token = self.tokens.create("demo", self.key)["token"]
        self.assertEqual(self.tokens.revoke("demo", self.key)["type"], "api-key")
        for value in (self.key, token):
            self.assertRaises(Unauthorized, self.guard.authenticate, value, "demo", "read")
        self.assertRaises(Unauthorized, self.tokens.create, "demo", self.key)

    def test_revoke_refused(self):
        other = self.accounts.create_api_key("other")["value"]
        self.assertRaises(Forbidden, self.tokens.revoke, "demo", other)
        self.guard.authenticate(other, "other", "read")  # not revoked
        self.assertRaises(Unauthorized, self.tokens.revoke, "demo", "garbage")
        self.assertRaises(TokenError, self.tokens.revoke, "demo", None)

    def test_revoke_expired(self):
        token = self.tokens.create("demo", self.key, ttl=1)["token"]
        self.clock.now += 2
        self.assertFalse(self.tokens.revoke("demo", token)["revoked"])
