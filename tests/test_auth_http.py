"""Authentication against a real ``litevna serve`` (SPEC §3; the client's document's
"API Keys & Tokens" and "Authentication Methods").

The matrix: every credential method (Bearer, Basic ``litevna:`` + token, the
``/{label}/key_T/dicomweb`` path prefix, the ``litevna-token`` cookie, ``?_auth_token=``)
× every case (valid key or token, missing, malformed, forged signature, expired, revoked,
another store's, lacking the permission, outside a token's scope) × every route family
(STOW, QIDO, WADO metadata, frames, Part 10 retrieve, rendered, thumbnail, bulk data,
DELETE), each with its exact status. One server serves the whole module: the keys and
tokens that must be expired or revoked are made first and waited for once.

Then tokens/create and tokens/revoke, scoped tokens at every QIDO level and on STOW, the
order the methods are judged in, the secrets kept out of the log and out of the URLs the
server hands back, and a revocation seen by a second server process on the same data dir
within one second.
"""

import base64
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from http.cookiejar import DefaultCookiePolicy

import pytest
import requests

from helpers import (
    failed, instance, multipart, multipart_type, new_uid, referenced, request, sop_uid_of,
)
from live import LiveServer, config, database_args

pytestmark = pytest.mark.usefixtures("server_log_is_clean")

LABEL, OTHER = "demo", "other"
OWNER = "owner@example.org"
REALM = 'Bearer realm="litevna"'
NOT_AUTHORIZED = 0x0124  # PS3.18 §10.5.3: FailureReason "not authorized" (292)
BOUNDARY = "auth-test-boundary"
METHODS = ("bearer", "basic", "path", "cookie", "query")
#: Cases that succeed; the DELETE of each (method, case) removes its own throwaway instance.
VALID = ("valid_key", "valid_token", "in_scope")
UNAUTHORIZED = ("forged_key", "forged_token", "expired_key", "expired_token", "revoked_key",
                "revoked_token", "revoked_parent", "revoked_key_admin", "revoked_parent_admin")
FORBIDDEN = ("other_store", "other_store_token", "no_permission", "no_permission_token")
CASES = VALID + UNAUTHORIZED + FORBIDDEN + ("out_of_scope",)
#: A key (and a token's permissions) lacking the permission a route needs.
LACKING_KEY = {"read": "write_only", "write": "read_only", "delete": "read_write"}
LACKING_PERMS = {"read": ["write", "delete"], "write": ["read", "delete"],
                 "delete": ["read", "write"]}


def basic(credential):
    """The Authorization value of the client's document: Basic base64(litevna:token)."""
    raw = credential if isinstance(credential, bytes) else credential.encode()
    return b"Basic " + base64.b64encode(raw)


def carry(method, token):
    """How a method carries a token: header, path segment, cookie or query parameter."""
    return {
        "bearer": {"authorization": f"Bearer {token}"},
        "basic": {"authorization": basic("litevna:" + token)},
        "path": {"segment": f"key_{token}"},
        "cookie": {"cookie": f"litevna-token={token}"},
        "query": {"query": f"_auth_token={token}"},
    }[method]


def forge(value):
    """value with one character of its signature changed (the header and claims intact)."""
    head, claims, signature = value.split(".")
    middle = len(signature) // 2
    flipped = "B" if signature[middle] == "A" else "A"
    return f"{head}.{claims}.{signature[:middle]}{flipped}{signature[middle + 1:]}"


#: Malformed credentials of each method, given a valid token: each must be a 401.
MALFORMED = {
    "bearer": {
        "no_credential": lambda t: {"authorization": "Bearer"},
        "spaces": lambda t: {"authorization": f"Bearer {t[:20]} {t[20:]}"},
        "trailing_word": lambda t: {"authorization": f"Bearer {t} extra"},
        "garbage": lambda t: {"authorization": "Bearer not-a-token"},
        "non_ascii": lambda t: {"authorization": b"Bearer \xc3\xa9" + t.encode()},
        "other_scheme": lambda t: {"authorization": f"Token {t}"},
    },
    "basic": {
        "not_base64": lambda t: {"authorization": "Basic !!not*base64!!"},
        "other_user": lambda t: {"authorization": basic("admin:" + t)},
        "no_user": lambda t: {"authorization": basic(":" + t)},
        "no_colon": lambda t: {"authorization": basic(t)},
        "empty_password": lambda t: {"authorization": basic("litevna:")},
        "non_ascii": lambda t: {"authorization": basic(b"litevna:\xc3\xa9" + t.encode())},
    },
    "path": {
        "empty": lambda t: {"segment": "key_"},
        "garbage": lambda t: {"segment": "key_not-a-token"},
        "non_ascii": lambda t: {"segment": "key_%C3%A9" + t},
        "truncated": lambda t: {"segment": "key_" + t[:-4]},
    },
    "cookie": {
        "empty": lambda t: {"cookie": "litevna-token="},
        "garbage": lambda t: {"cookie": "litevna-token=not-a-token"},
        "non_ascii": lambda t: {"cookie": b"litevna-token=\xc3\xa9" + t.encode()},
    },
    "query": {
        "empty": lambda t: {"query": "_auth_token="},
        "garbage": lambda t: {"query": "_auth_token=not-a-token"},
        "non_ascii": lambda t: {"query": "_auth_token=%C3%A9" + t},
        "not_latin1": lambda t: {"query": "_auth_token=%E2%82%AC" + t},
        "not_utf8": lambda t: {"query": "_auth_token=%FF" + t},
        "bad_escape": lambda t: {"query": "_auth_token=%ZZ" + t},
    },
}


@dataclass(frozen=True)
class Target:
    """A stored instance (or, for ghosts, one that does not exist)."""

    study: str
    series: str
    sop: str
    patient: str
    bulk_tail: str = "7FE00010"

    @property
    def path(self):
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def ghost(self):
        """A target of the same shape in a study that does not exist."""
        study = new_uid()
        return replace(self, study=study, series=study + ".1", sop=study + ".1.1")


@dataclass
class World:
    """The module's server, stores, keys, tokens and stored instances."""

    server: LiveServer
    keys: dict
    values: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    throwaways: dict = field(default_factory=dict)
    studies: dict = field(default_factory=dict)

    @property
    def url(self):
        return self.server.url

    def send(self, http, verb, rel, carried=None, label=LABEL, headers=None, data=None,
             server=None):
        """verb {server}/{label}[/key_T]/dicomweb{rel} carrying a credential."""
        carried = carried or {}
        base = (server or self.server).url + f"/{label}"
        if "segment" in carried:
            base += "/" + carried["segment"]
        url = base + "/dicomweb" + rel
        if "query" in carried:
            url += ("&" if "?" in url else "?") + carried["query"]
        headers = dict(headers or {})
        if "authorization" in carried:
            headers["Authorization"] = carried["authorization"]
        if "cookie" in carried:
            headers["Cookie"] = carried["cookie"]
        return request(verb, url, headers, session=http, data=data)

    def full(self, http, verb, rel, **kwargs):
        """A request with the store's all-permission key."""
        return self.send(http, verb, rel, carry("bearer", self.keys["all"]["value"]), **kwargs)

    def exists(self, http, target):
        response = self.full(http, "GET", target.path + "/metadata")
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200


def token_for(server, http, key_value, label=LABEL, **fields):
    """A derived token's value (tokens/create must answer 200)."""
    response = http.post(f"{server.url}/image-stores/{label}/tokens/create",
                         json={"api_key_value": key_value, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def admin_process(data_dir, *args):
    """``litevna admin ...`` started (not waited for): each costs a Python start-up."""
    return subprocess.Popen(
        [sys.executable, "-m", "litevna", "admin", *args, "--data-dir", str(data_dir),
         *database_args(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def admin_output(process):
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return json.loads(out)


def provision_keys(data_dir):
    """Two stores and the keys the module needs, in-process (as ``litevna admin`` does)."""
    from litevna.accounts import Accounts
    from litevna.service import open_backends

    index, keyring = open_backends(config(data_dir))
    try:
        accounts = Accounts(index, keyring, time.time)
        accounts.create_account(OWNER, "correct horse battery")
        accounts.create_store(LABEL, OWNER)
        accounts.create_store(OTHER, OWNER)
        permissions = {"all": ("read", "write", "delete"), "read_only": ("read",),
                       "write_only": ("write",), "read_write": ("read", "write"),
                       "revoked_by_route": ("read", "write", "delete"),
                       "revoked_by_admin": ("read", "write", "delete"),
                       "second_route": ("read",), "second_key": ("read",),
                       "second_admin": ("read",)}
        keys = {name: accounts.create_api_key(LABEL, name=name, permissions=perms)
                for name, perms in permissions.items()}
        keys["other"] = accounts.create_api_key(OTHER, name="other")
        keys["short"] = accounts.create_api_key(LABEL, name="short", expires_in=100)
        return keys
    finally:
        index.close()


@pytest.fixture(scope="module")
def http():
    """One session, which never keeps a cookie (each request says what it carries)."""
    with requests.Session() as session:
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        yield session


@pytest.fixture(scope="module")
def world(tmp_path_factory, http):
    data_dir = tmp_path_factory.mktemp("auth")
    keys = provision_keys(data_dir)
    # The key that expires (made by the CLI, as an operator would) starts while the server does.
    expiring = admin_process(data_dir, "create-api-key", LABEL, "--expires-in", "1")
    server = LiveServer(data_dir).start()
    try:
        keys["expiring"] = admin_output(expiring)
        expiring_made = time.monotonic()
        w = World(server, keys)
        all_key = keys["all"]["value"]
        v = w.values
        v["expired_key"] = keys["expiring"]["value"]
        v["expired_token"] = token_for(server, http, all_key, ttl=1)
        expired_token_made = time.monotonic()
        # Tokens whose key is revoked below, one key by the CLI and one by tokens/revoke.
        v["revoked_parent_admin"] = token_for(server, http, keys["revoked_by_admin"]["value"])
        revoking = admin_process(data_dir, "revoke-api-key", LABEL, keys["revoked_by_admin"]["id"])
        v["revoked_parent"] = token_for(server, http, keys["revoked_by_route"]["value"])
        v["revoked_key"] = keys["revoked_by_route"]["value"]
        v["revoked_key_admin"] = keys["revoked_by_admin"]["value"]

        # The data: studies A and C of patient PA, B of PB, D of PD.
        ids = {name: new_uid() for name in "ABCD"}
        patients = {"A": "PA", "B": "PB", "C": "PA", "D": "PD"}
        w.studies = {name: (ids[name], patients[name]) for name in "ABCD"}

        def target(name, series_suffix=".1"):
            study = ids[name]
            return Target(study, study + series_suffix, new_uid(), patients[name])

        w.targets = {"a": target("A"), "a_victim": target("A"), "b": target("B"),
                     "b_victim": target("B"), "c": target("C"), "d": target("D")}
        w.throwaways = {(method, case): target("A", ".2") for method in METHODS
                        for case in VALID}
        parts = [instance(study_uid=t.study, series_uid=t.series, sop_uid=t.sop,
                          PatientID=t.patient)
                 for t in list(w.targets.values()) + list(w.throwaways.values())]
        stored = w.full(http, "POST", "/studies", data=multipart(parts, BOUNDARY),
                        headers={"Content-Type": multipart_type(BOUNDARY)})
        assert stored.status_code == 200, stored.text
        metadata = w.full(http, "GET", w.targets["a"].path + "/metadata").json()[0]
        bulk_uri = metadata["7FE00010"]["BulkDataURI"]
        tail = bulk_uri.split("/bulkdata/", 1)[1]
        w.targets = {name: replace(t, bulk_tail=tail) for name, t in w.targets.items()}

        v["valid_key"] = all_key
        v["valid_token"] = token_for(server, http, all_key)
        v["in_scope"] = v["out_of_scope"] = token_for(
            server, http, all_key, scopes={"study_ids": [ids["A"]]})
        v["forged_key"] = forge(all_key)
        v["forged_token"] = forge(v["valid_token"])
        v["other_store"] = keys["other"]["value"]
        v["other_store_token"] = token_for(server, http, keys["other"]["value"], label=OTHER)
        for permission, perms in LACKING_PERMS.items():
            v["lacks_" + permission] = token_for(server, http, all_key, permissions=perms)
        v["revoked_token"] = token_for(server, http, all_key)
        for value in (v["revoked_token"], v["revoked_key"]):
            revoked = http.post(f"{server.url}/image-stores/{LABEL}/tokens/revoke",
                                json={"token": value}, timeout=30)
            assert revoked.status_code == 200, revoked.text
        admin_output(revoking)
        revoked_made = time.monotonic()
        # Once for the whole module: the 1 s key and token expire, the revocations show
        # (SPEC §3: within one second).
        pause = max(expiring_made + 1.2, expired_token_made + 1.2, revoked_made + 1.0)
        time.sleep(max(0.0, pause - time.monotonic()))
        yield w
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(world):
    """The module's server (server_log_is_clean checks its log)."""
    return world.server


# The route families. Each builds its request for a target and knows what success and
# "outside the token's scope" look like, and what a refused request must have left alone.

class Route:
    name = permission = None
    verb = "GET"
    accept = None

    def rel(self, target):
        raise NotImplementedError

    def call(self, w, http, carried, target):
        headers = {"Accept": self.accept} if self.accept else {}
        return w.send(http, self.verb, self.rel(target), carried, headers=headers), None

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text

    def check_out_of_scope(self, w, http, response, target, extra, carried):
        # SPEC §3: existence is not leaked; the body is that of a study that does not exist.
        ghost, _ = self.call(w, http, carried, target.ghost())
        assert (response.status_code, response.content) == (404, ghost.content)
        assert response.json()["status"] == 404

    def check_refused(self, w, http, target, extra):
        pass

    def __repr__(self):
        return self.name


class Stow(Route):
    name, permission, verb = "stow", "write", "POST"

    def call(self, w, http, carried, target):
        data = instance(study_uid=target.study, series_uid=target.series,
                        PatientID=target.patient)
        sop = sop_uid_of(data)
        response = w.send(http, "POST", "/studies", carried, data=data,
                          headers={"Content-Type": "application/dicom"})
        return response, sop

    def check_ok(self, w, http, response, target, sop, scoped):
        assert response.status_code == 200, response.text
        assert referenced(response.json()) == [sop]
        assert self._stored(w, http, sop)

    def check_out_of_scope(self, w, http, response, target, sop, carried):
        assert response.status_code == 409, response.text
        assert [reason for _, reason in failed(response.json())] == [NOT_AUTHORIZED]
        assert not self._stored(w, http, sop)

    def check_refused(self, w, http, target, sop):
        assert not self._stored(w, http, sop)

    @staticmethod
    def _stored(w, http, sop):
        found = w.full(http, "GET", f"/instances?SOPInstanceUID={sop}")
        assert found.status_code == 200, found.text
        return len(found.json()) == 1


class Qido(Route):
    name, permission = "qido", "read"

    def call(self, w, http, carried, target):
        # Asks for A and B by UID: the whole store sees both, a token scoped to A sees A.
        a, b = w.studies["A"][0], w.studies["B"][0]
        return w.send(http, "GET", f"/studies?StudyInstanceUID={a},{b}", carried), None

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        expected = {w.studies["A"][0]} if scoped else {w.studies["A"][0], w.studies["B"][0]}
        assert _study_uids(response) == expected

    def check_out_of_scope(self, w, http, response, target, extra, carried):
        self.check_ok(w, http, response, target, extra, scoped=True)


class Metadata(Route):
    name, permission = "metadata", "read"

    def rel(self, target):
        return f"/studies/{target.study}/series/{target.series}/metadata"

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/dicom+json")
        assert target.sop in {item["00080018"]["Value"][0] for item in response.json()}


class Frames(Route):
    name, permission = "frames", "read"
    accept = 'multipart/related; type="application/octet-stream"'

    def rel(self, target):
        return target.path + "/frames/1"

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("multipart/related")
        assert len(response.content) > 16 * 16 * 2


class Retrieve(Route):
    name, permission = "retrieve", "read"
    accept = "application/dicom"

    def rel(self, target):
        return target.path

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/dicom")
        assert response.content[128:132] == b"DICM"
        assert sop_uid_of(response.content) == target.sop


class Rendered(Route):
    name, permission = "rendered", "read"
    accept = "image/jpeg"

    def rel(self, target):
        return target.path + "/frames/1/rendered"

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.content[:2] == b"\xff\xd8"


class Thumbnail(Rendered):
    name = "thumbnail"

    def rel(self, target):
        return target.path + "/thumbnail"


class Bulkdata(Route):
    name, permission = "bulkdata", "read"

    def rel(self, target):
        return target.path + "/bulkdata/" + target.bulk_tail

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 200, response.text
        assert len(response.content) >= 16 * 16 * 2


class Delete(Route):
    name, permission, verb = "delete", "delete", "DELETE"

    def rel(self, target):
        return target.path

    def check_ok(self, w, http, response, target, extra, scoped):
        assert response.status_code == 204, response.text
        assert not w.exists(http, target)

    def check_out_of_scope(self, w, http, response, target, extra, carried):
        super().check_out_of_scope(w, http, response, target, extra, carried)
        assert w.exists(http, target)

    def check_refused(self, w, http, target, extra):
        assert w.exists(http, target)


ROUTES = (Stow(), Qido(), Metadata(), Frames(), Retrieve(), Rendered(), Thumbnail(),
          Bulkdata(), Delete())


def _study_uids(response):
    return {item["0020000D"]["Value"][0] for item in response.json()}


def _target(w, route, method, case):
    if route.name == "delete":
        if case in VALID:
            return w.throwaways[(method, case)]
        return w.targets["b_victim" if case == "out_of_scope" else "a_victim"]
    return w.targets["b" if case == "out_of_scope" else "a"]


def _credential(w, route, case):
    if case == "no_permission":
        return w.keys[LACKING_KEY[route.permission]]["value"]
    if case == "no_permission_token":
        return w.values["lacks_" + route.permission]
    return w.values[case]


def _expect_401(response):
    assert response.status_code == 401, response.text
    assert response.headers.get("WWW-Authenticate") == REALM
    assert response.json()["status"] == 401


def _assert_no_secret(response, *secrets):
    """A successful DICOMweb answer names no token and no key_ segment or _auth_token."""
    if response.status_code >= 300 or not response.headers.get("Content-Type", "").startswith(
            "application/dicom+json"):
        return
    for secret in (b"key_", b"_auth_token") + tuple(s.encode() for s in secrets):
        assert secret not in response.content


# The matrix itself.

MATRIX = [(method, case) for method in METHODS for case in CASES] + [
    (method, "malformed:" + variant) for method in METHODS for variant in MALFORMED[method]]


@pytest.mark.parametrize("route", ROUTES, ids=repr)
@pytest.mark.parametrize(("method", "case"), MATRIX, ids=[f"{m}-{c}" for m, c in MATRIX])
def test_matrix(world, http, method, case, route):
    target = _target(world, route, method, case)
    if case.startswith("malformed:"):
        carried = MALFORMED[method][case.split(":", 1)[1]](world.values["valid_token"])
    else:
        token = _credential(world, route, case)
        carried = carry(method, token)
    response, extra = route.call(world, http, carried, target)
    if case in VALID:
        route.check_ok(world, http, response, target, extra, scoped=case == "in_scope")
        _assert_no_secret(response, token)
    elif case == "out_of_scope":
        route.check_out_of_scope(world, http, response, target, extra, carried)
    elif case in FORBIDDEN:
        assert response.status_code == 403, response.text
        route.check_refused(world, http, target, extra)
    else:
        _expect_401(response)
        route.check_refused(world, http, target, extra)


@pytest.mark.parametrize("route", ROUTES, ids=repr)
def test_missing_credential(world, http, route):
    target = _target(world, route, None, "missing")
    response, extra = route.call(world, http, {}, target)
    _expect_401(response)
    assert "Bearer" in response.json()["error"]
    route.check_refused(world, http, target, extra)


# The client's document, byte for byte.

def test_basic_exactly_as_documented(world, http):
    token = world.values["valid_token"]
    value = b"Basic " + base64.b64encode(b"litevna:" + token.encode("ascii"))
    response = request("GET", f"{world.url}/{LABEL}/dicomweb/studies?limit=100",
                       {"Authorization": value}, session=http)
    assert response.status_code == 200, response.text
    # requests' own Basic auth (HTTPBasicAuth) is what tools send; it must work too.
    response = http.get(f"{world.url}/{LABEL}/dicomweb/studies", timeout=30,
                        auth=("litevna", token))
    assert response.status_code == 200, response.text


def test_path_prefix_exactly_as_documented(world, http):
    key = world.keys["all"]["value"]
    target = world.targets["a"]
    url = f"{world.url}/{LABEL}/key_{key}/dicomweb/studies"
    response = request("GET", url, session=http)
    assert response.status_code == 200, response.text
    assert target.study in _study_uids(response)
    # An image tag's URL: no header at all, the token only in the path.
    url = (f"{world.url}/{LABEL}/key_{key}/dicomweb/studies/{target.study}/series/"
           f"{target.series}/instances/{target.sop}/frames/1/rendered")
    response = request("GET", url, session=http)
    assert response.status_code == 200, response.text
    assert response.content[:2] == b"\xff\xd8"


def test_query_parameter_exactly_as_documented(world, http):
    response = request("GET", f"{world.url}/{LABEL}/dicomweb/studies?_auth_token="
                              f"{world.values['valid_token']}", session=http)
    assert response.status_code == 200, response.text
    # ... and the other parameters of the query still count once it is taken out.
    a = world.targets["a"].study
    response = request("GET", f"{world.url}/{LABEL}/dicomweb/studies?StudyInstanceUID={a}"
                              f"&_auth_token={world.values['valid_token']}&limit=5",
                       session=http)
    assert _study_uids(response) == {a}


def test_basic_user_name_is_case_sensitive_and_scheme_is_not(world, http):
    token = world.values["valid_token"]
    for value, status in ((basic("LiteVNA:" + token), 401), (b"basic " + basic(
            "litevna:" + token)[6:], 200), (f"BEARER {token}", 200)):
        response = world.send(http, "GET", "/studies", {"authorization": value})
        assert response.status_code == status, (value, response.text)


# Precedence: the first method present is judged; an invalid one is never skipped.

ORDERS = [("bearer", "path"), ("bearer", "cookie"), ("bearer", "query"), ("basic", "path"),
          ("basic", "cookie"), ("basic", "query"), ("path", "cookie"), ("path", "query"),
          ("cookie", "query")]


@pytest.mark.parametrize(("first", "second"), ORDERS, ids=[f"{a}-{b}" for a, b in ORDERS])
def test_first_method_is_judged(world, http, first, second):
    valid, other = world.values["valid_token"], world.values["other_store"]
    cases = ((valid, forge(valid), 200), (forge(valid), valid, 401), ("", valid, 401),
             (other, valid, 403), (valid, other, 200))
    for judged, ignored, status in cases:
        carried = {**carry(second, ignored), **carry(first, judged)}
        response = world.send(http, "GET", "/studies", carried)
        assert response.status_code == status, (judged[:12], ignored[:12], response.text)


def test_bearer_valid_invalid_cookie(world, http):
    carried = {**carry("bearer", world.values["valid_key"]), "cookie": "litevna-token=garbage"}
    assert world.send(http, "GET", "/studies", carried).status_code == 200


def test_invalid_bearer_valid_query(world, http):
    carried = {**carry("query", world.values["valid_key"]), "authorization": "Bearer garbage"}
    _expect_401(world.send(http, "GET", "/studies", carried))


def _raw_request(world, head):
    """Send a request head by hand (for what an HTTP client library will not send)."""
    with socket.create_connection(("127.0.0.1", world.server.port), timeout=10) as sock:
        sock.sendall(head + b"Host: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_two_authorization_headers(world, http):
    token = world.values["valid_token"].encode()
    answer = _raw_request(world, b"GET /demo/dicomweb/studies HTTP/1.1\r\n"
                                 b"Authorization: Bearer " + token + b"\r\n"
                                 b"Authorization: Bearer " + token + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"WWW-Authenticate: " + REALM.encode() in answer


@pytest.mark.parametrize(("head", "status"), [
    # A request line is ASCII (RFC 9112 §3.2): Twisted refuses it before any route.
    (b"GET /demo/key_\xc3\xa9TOKEN/dicomweb/studies HTTP/1.1\r\n", 400),
    (b"GET /demo/dicomweb/studies?_auth_token=\xc3\xa9TOKEN HTTP/1.1\r\n", 400),
    (b"GET /demo/dicomweb/studies HTTP/1.1\r\nCookie: litevna-token=\xff\xfeTOKEN\r\n", 401),
    (b"GET /demo/dicomweb/studies HTTP/1.1\r\nAuthorization: Bearer \xff\xfeTOKEN\r\n", 401),
    (b"GET /demo/dicomweb/studies HTTP/1.1\r\nAuthorization: Basic \xff\r\n", 401),
], ids=["path", "query", "cookie", "bearer", "basic"])
def test_raw_non_ascii_credentials(world, http, head, status):
    """Bytes no client library sends: refused, never a 5xx."""
    answer = _raw_request(world, head.replace(b"TOKEN", world.values["valid_token"].encode()))
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]


def test_query_parameter_name_percent_encoded(world, http):
    """``%5Fauth_token`` is ``_auth_token`` (RFC 3986 §6.2.2.2): used, and taken out of the
    URI before it is logged. (requests would decode the escape itself: sent by hand.)"""
    token = world.values["valid_token"].encode()
    answer = _raw_request(world, b"GET /demo/dicomweb/studies?%5Fauth_token=" + token +
                          b"&limit=1 HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


# tokens/create (the client's document) and tokens/revoke.

def create(w, http, label=LABEL, **body):
    return http.post(f"{w.url}/image-stores/{label}/tokens/create", json=body, timeout=30)


def revoke(w, http, value, label=LABEL, name="token"):
    return http.post(f"{w.url}/image-stores/{label}/tokens/revoke", json={name: value},
                     timeout=30)


def test_create_answer(world, http):
    before = time.time()
    response = create(world, http, api_key_value=world.keys["all"]["value"], ttl=600)
    after = time.time()
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert {"token", "expiresAt", "scopes"} <= set(body)
    assert body["scopes"] is None
    assert int((before + 600) * 1000) - 1000 <= body["expiresAt"] <= int((after + 600) * 1000)
    assert isinstance(body["expiresAt"], int)
    assert body["token"].count(".") == 2 and body["token"].startswith("eyJ")
    assert world.send(http, "GET", "/studies", carry("bearer", body["token"])).status_code == 200


def test_create_default_ttl_is_an_hour(world, http):
    now = time.time() * 1000
    body = create(world, http, api_key_value=world.keys["all"]["value"]).json()
    assert abs(body["expiresAt"] - (now + 3600 * 1000)) < 5000


def test_create_scopes_echoed(world, http):
    a = world.studies["A"][0]
    body = create(world, http, api_key_value=world.keys["all"]["value"],
                  scopes={"study_ids": [a, a], "patient_ids": ["PB"]}).json()
    assert body["scopes"] == {"study_ids": [a], "patient_ids": ["PB"]}


@pytest.mark.parametrize("ttl", [1, 86400, 3600.0])
def test_ttl_in_bounds(world, http, ttl):
    response = create(world, http, api_key_value=world.keys["all"]["value"], ttl=ttl)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("ttl", [0, -1, 86401, "abc", "60", 1.5, True, [60], {"s": 1}, 1e19])
def test_ttl_out_of_bounds(world, http, ttl):
    response = create(world, http, api_key_value=world.keys["all"]["value"], ttl=ttl)
    assert response.status_code == 400, response.text
    assert "ttl" in response.json()["error"]


@pytest.mark.parametrize("scopes", [
    [], "1.2.3", {"study_ids": "1.2.3"}, {"study_ids": ["not a uid"]}, {"study_ids": [""]},
    {"study_ids": [1]}, {"patient_ids": ["x" * 65]}, {}, {"study_ids": [], "patient_ids": []},
    {"series_ids": ["1.2"]}, {"patient_ids": [f"P{i}" for i in range(101)]},
], ids=repr)
def test_bad_scopes(world, http, scopes):
    response = create(world, http, api_key_value=world.keys["all"]["value"], scopes=scopes)
    assert response.status_code == 400, response.text


def test_token_never_outlives_its_key(world, http):
    key = world.keys["short"]
    body = create(world, http, api_key_value=key["value"], ttl=86400).json()
    assert body["expiresAt"] <= key["expiresAt"]
    assert key["expiresAt"] - body["expiresAt"] < 2000


def test_permissions_narrowing(world, http):
    read = create(world, http, api_key_value=world.keys["all"]["value"], permissions=["read"])
    assert read.status_code == 200, read.text
    token = read.json()["token"]
    assert world.send(http, "GET", "/studies", carry("bearer", token)).status_code == 200
    stow = world.send(http, "POST", "/studies", carry("bearer", token), data=instance(),
                      headers={"Content-Type": "application/dicom"})
    assert stow.status_code == 403, stow.text
    # More than the key has is a 403; an unknown permission or an empty list is a 400.
    beyond = create(world, http, api_key_value=world.keys["read_only"]["value"],
                    permissions=["read", "write"])
    assert beyond.status_code == 403, beyond.text
    for bad in ([], ["admin"], "read"):
        response = create(world, http, api_key_value=world.keys["all"]["value"],
                          permissions=bad)
        assert response.status_code == 400, (bad, response.text)


def test_token_inherits_key_permissions(world, http):
    token = token_for(world.server, http, world.keys["read_only"]["value"])
    assert world.send(http, "GET", "/studies", carry("bearer", token)).status_code == 200
    response = world.send(http, "DELETE", world.targets["a_victim"].path, carry("bearer", token))
    assert response.status_code == 403


@pytest.mark.parametrize(("case", "status"), [
    ("derived_token", 400), ("missing", 400), ("empty", 400), ("number", 400),
    ("forged", 401), ("garbage", 401), ("expired", 401), ("revoked", 401),
    ("revoked_admin", 401), ("other_store", 403), ("no_such_store", 403),
])
def test_create_refused(world, http, case, status):
    v, keys = world.values, world.keys
    label = LABEL
    body = {
        "derived_token": {"api_key_value": v["valid_token"]},
        "missing": {},
        "empty": {"api_key_value": ""},
        "number": {"api_key_value": 42},
        "forged": {"api_key_value": forge(keys["all"]["value"])},
        "garbage": {"api_key_value": "eyJhbGciOi.garbage.x"},
        "expired": {"api_key_value": v["expired_key"]},
        "revoked": {"api_key_value": v["revoked_key"]},
        "revoked_admin": {"api_key_value": v["revoked_key_admin"]},
        "other_store": {"api_key_value": keys["other"]["value"]},
        "no_such_store": {"api_key_value": keys["all"]["value"]},
    }[case]
    if case == "no_such_store":
        label = "no-such-store"
    response = create(world, http, label=label, **body)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers.get("WWW-Authenticate") == REALM


def test_create_rejects_unknown_fields_and_bad_bodies(world, http):
    response = create(world, http, api_key_value=world.keys["all"]["value"], tll=60)
    assert response.status_code == 400
    for raw in (b"", b"not json", b"[1]", b'{"ttl": 1e400}'):
        response = http.post(f"{world.url}/image-stores/{LABEL}/tokens/create", data=raw,
                             headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 400, (raw, response.text)


def test_revoke_token_twice(world, http):
    token = token_for(world.server, http, world.keys["all"]["value"])
    assert world.send(http, "GET", "/studies", carry("bearer", token)).status_code == 200
    first = revoke(world, http, token)
    assert first.status_code == 200, first.text
    assert first.json()["revoked"] is True
    second = revoke(world, http, token)
    assert second.status_code == 200, second.text
    _expect_401(world.send(http, "GET", "/studies", carry("bearer", token)))
    # Its key, and the key's other tokens, live on.
    assert world.send(http, "GET", "/studies", carry("bearer", world.values["valid_token"])) \
        .status_code == 200


def test_revoke_key_value_kills_key_and_its_tokens(world, http):
    key = world.keys["revoked_by_route"]["value"]
    for value in (key, world.values["revoked_parent"]):
        _expect_401(world.send(http, "GET", "/studies", carry("bearer", value)))
    again = revoke(world, http, key, name="api_key_value")
    assert again.status_code == 200, again.text


def test_revoke_refused(world, http):
    assert revoke(world, http, forge(world.values["valid_token"])).status_code == 401
    assert revoke(world, http, "garbage").status_code == 401
    assert revoke(world, http, world.values["other_store_token"]).status_code == 403
    assert revoke(world, http, world.keys["other"]["value"]).status_code == 403
    assert revoke(world, http, None).status_code == 400
    # An expired token needs no revoking, and saying so is not an error.
    expired = revoke(world, http, world.values["expired_token"])
    assert expired.status_code == 200, expired.text
    assert expired.json()["revoked"] is False
    # The other store's key still works there.
    response = world.send(http, "GET", "/studies", carry("bearer", world.keys["other"]["value"]),
                          label=OTHER)
    assert response.status_code == 200


# Scoped tokens (SPEC §3: study_ids ∪ patient_ids).

SCOPES = {
    "study": (lambda s: {"study_ids": [s["A"][0]]}, "A"),
    "patient": (lambda s: {"patient_ids": ["PA"]}, "AC"),
    "union": (lambda s: {"study_ids": [s["B"][0]], "patient_ids": ["PA"]}, "ABC"),
}


@pytest.fixture(scope="module")
def scoped(world, http):
    """{name: (token, visible study names)} of tokens of each kind of scope."""
    return {name: (token_for(world.server, http, world.keys["all"]["value"],
                             scopes=make(world.studies)), visible)
            for name, (make, visible) in SCOPES.items()}


def _visible(world, names):
    return {world.studies[name][0] for name in names}


@pytest.mark.parametrize("kind", sorted(SCOPES))
@pytest.mark.parametrize("level", ["/studies", "/series", "/instances"])
def test_qido_store_level_filtered(world, http, scoped, kind, level):
    token, visible = scoped[kind]
    # The whole store's answer first, so a cached answer would show.
    everything = world.full(http, "GET", level + "?limit=1000")
    assert _study_uids(everything) >= _visible(world, "ABCD")
    response = world.send(http, "GET", level + "?limit=1000", carry("bearer", token))
    assert response.status_code == 200, response.text
    assert _study_uids(response) == _visible(world, visible)


@pytest.mark.parametrize("kind", sorted(SCOPES))
def test_qido_study_level_paths_filtered(world, http, scoped, kind):
    token, visible = scoped[kind]
    for name, (study, _) in world.studies.items():
        series = study + ".1"
        for rel in (f"/studies/{study}/series", f"/studies/{study}/instances",
                    f"/studies/{study}/series/{series}/instances",
                    f"/studies?StudyInstanceUID={study}"):
            response = world.send(http, "GET", rel, carry("bearer", token))
            assert response.status_code == 200, response.text
            assert bool(response.json()) == (name in visible), (kind, name, rel)


@pytest.mark.parametrize("kind", sorted(SCOPES))
def test_wado_sees_only_scope(world, http, scoped, kind):
    token, visible = scoped[kind]
    for name, target in (("A", world.targets["a"]), ("B", world.targets["b"]),
                         ("C", world.targets["c"]), ("D", world.targets["d"])):
        for rel in (target.path + "/metadata", f"/studies/{target.study}/metadata",
                    target.path + "/frames/1", target.path + "/thumbnail",
                    f"/studies/{target.study}/rendered"):
            response = world.send(http, "GET", rel, carry("bearer", token))
            assert response.status_code == (200 if name in visible else 404), (kind, name, rel)


def test_scope_cannot_be_left_through_the_path(world, http):
    """A token scoped to A asking for B's series or instance under A's study UID."""
    token = world.values["in_scope"]
    a, b = world.targets["a"], world.targets["b"]
    crossed = replace(b, study=a.study)
    for route in ROUTES[2:]:
        response, _ = route.call(world, http, carry("bearer", token), crossed)
        assert response.status_code == 404, (route, response.text)
    assert world.exists(http, b)


def test_stow_mixed_scope(world, http):
    """In-scope instances of a request are stored; the out-of-scope one fails with 0x0124."""
    token = world.values["in_scope"]
    a, b = world.targets["a"], world.targets["b"]
    inside = instance(study_uid=a.study, series_uid=a.series, PatientID=a.patient)
    outside = instance(study_uid=b.study, series_uid=b.series, PatientID=b.patient)
    new_study = instance(PatientID="PA")  # a new study: outside a study_ids scope
    inside_too = instance(study_uid=a.study, series_uid=a.series, PatientID=a.patient)
    body = multipart([inside, outside, new_study, inside_too], BOUNDARY)
    response = world.send(http, "POST", "/studies", carry("bearer", token), data=body,
                          headers={"Content-Type": multipart_type(BOUNDARY)})
    assert response.status_code == 202, response.text
    result = response.json()
    assert referenced(result) == [sop_uid_of(inside), sop_uid_of(inside_too)]
    assert [reason for _, reason in failed(result)] == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    for item in result["00081198"]["Value"]:
        assert item["00081197"] == {"vr": "US", "Value": [292]}
    assert Stow._stored(world, http, sop_uid_of(inside))
    assert not Stow._stored(world, http, sop_uid_of(outside))
    assert not Stow._stored(world, http, sop_uid_of(new_study))


def test_stow_patient_scope_new_study(world, http, scoped):
    """A patient scope may store a new study of its patient, not one of another patient."""
    token, _ = scoped["patient"]
    mine, theirs = instance(PatientID="PA"), instance(PatientID="PB")
    body = multipart([mine, theirs], BOUNDARY)
    response = world.send(http, "POST", "/studies", carry("bearer", token), data=body,
                          headers={"Content-Type": multipart_type(BOUNDARY)})
    assert response.status_code == 202, response.text
    assert referenced(response.json()) == [sop_uid_of(mine)]
    assert [reason for _, reason in failed(response.json())] == [NOT_AUTHORIZED]


def test_stow_scope_failure_names_the_instance(world, http):
    b = world.targets["b"]
    outside = instance(study_uid=b.study, series_uid=b.series, PatientID=b.patient)
    response = world.send(http, "POST", "/studies", carry("bearer", world.values["in_scope"]),
                          data=outside, headers={"Content-Type": "application/dicom"})
    assert failed(response.json()) == [(sop_uid_of(outside), NOT_AUTHORIZED)]


def test_stow_patient_scope_cannot_write_into_another_patients_study(world, http, scoped):
    token, _ = scoped["patient"]
    b = world.targets["b"]
    intruder = instance(study_uid=b.study, series_uid=b.series, PatientID="PA")
    response = world.send(http, "POST", "/studies", carry("bearer", token), data=intruder,
                          headers={"Content-Type": "application/dicom"})
    assert [reason for _, reason in failed(response.json())] == [NOT_AUTHORIZED]


# Secrets stay out of what the server hands back and what it logs.

@pytest.mark.parametrize("method", ["path", "query"])
def test_urls_handed_back_carry_no_secret(world, http, method):
    token = world.values["valid_token"]
    carried = carry(method, token)
    a = world.targets["a"]
    answers = [world.send(http, "GET", rel, carried) for rel in (
        "/studies", "/series", "/instances", f"/studies/{a.study}/series",
        f"/studies/{a.study}/metadata", a.path + "/metadata")]
    answers.append(world.send(http, "POST", "/studies", carried, data=instance(
        study_uid=a.study, series_uid=a.series, PatientID="PA"),
        headers={"Content-Type": "application/dicom"}))
    urls = []
    for response in answers:
        assert response.status_code == 200, response.text
        urls += _urls(response.json())
    assert any("/bulkdata/" in url for url in urls) and any("/instances/" in url for url in urls)
    for url in urls:
        assert url.startswith(f"{world.url}/{LABEL}/dicomweb/"), url
        assert "key_" not in url and "_auth_token" not in url and token not in url, url


def _urls(value):
    """Every RetrieveURL (0008,1190) and BulkDataURI in a DICOM JSON document."""
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    if not isinstance(value, dict):
        return []
    urls = [value["BulkDataURI"]] if "BulkDataURI" in value else []
    if value.get("vr") == "UR":
        urls += value.get("Value", [])
    return urls + [url for item in value.values() for url in _urls(item)]


# A second server process on the same data dir sees a revocation within one second.

@pytest.fixture(scope="module")
def second(world):
    other = LiveServer(world.server.data_dir).start()
    yield other
    other.stop()
    log = other.log()
    assert "Traceback" not in log and "_auth_token" not in log and "key_" not in log


def _seen_revoked(world, http, server, values, revoked_at):
    """Seconds from revoked_at until server refuses every value (fails after 3 s)."""
    pending = list(values)
    while pending:
        elapsed = time.monotonic() - revoked_at
        assert elapsed < 3, f"still accepted after {elapsed:.2f} s"
        response = world.send(http, "GET", "/studies?limit=1", carry("bearer", pending[0]),
                              server=server)
        if response.status_code == 401:
            pending.pop(0)
        else:
            assert response.status_code == 200, response.text
            time.sleep(0.02)
    return time.monotonic() - revoked_at


def test_second_process_sees_token_revocation(world, http, second):
    token = token_for(world.server, http, world.keys["second_route"]["value"])
    for server in (world.server, second):  # both accept it (and have it cached)
        assert world.send(http, "GET", "/studies", carry("bearer", token),
                          server=server).status_code == 200
    response = revoke(world, http, token)
    revoked_at = time.monotonic()
    assert response.status_code == 200, response.text
    assert _seen_revoked(world, http, second, [token], revoked_at) < 1.0


def test_second_process_sees_key_revoked_by_route(world, http, second):
    key = world.keys["second_key"]["value"]
    token = token_for(world.server, http, key)
    for value in (key, token):
        assert world.send(http, "GET", "/studies", carry("bearer", value),
                          server=second).status_code == 200
    response = revoke(world, http, key, name="api_key_value")
    revoked_at = time.monotonic()
    assert response.status_code == 200, response.text
    assert _seen_revoked(world, http, second, [token, key], revoked_at) < 1.0


def test_second_process_sees_key_revoked_by_admin(world, http, second):
    key = world.keys["second_admin"]
    token = token_for(second, http, key["value"])
    for server in (world.server, second):
        for value in (key["value"], token):
            assert world.send(http, "GET", "/studies", carry("bearer", value),
                              server=server).status_code == 200
    admin_output(admin_process(world.server.data_dir, "revoke-api-key", LABEL, key["id"]))
    revoked_at = time.monotonic()  # the CLI has committed the revocation and exited
    assert _seen_revoked(world, http, second, [token, key["value"]], revoked_at) < 1.0
    assert _seen_revoked(world, http, world.server, [token, key["value"]], revoked_at) < 1.0


# Last in the module: everything above has been logged by now.

def test_secrets_never_logged(world, http):
    """No token, key_ segment or _auth_token in the log (flushed every 0.5 s)."""
    marker = new_uid()
    secret = world.values["valid_token"]
    world.send(http, "GET", f"/studies?PatientID={marker}", carry("query", secret))
    world.send(http, "GET", f"/studies?StudyInstanceUID={marker}", carry("path", secret))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = world.server.log()
        if f"PatientID={marker}" in log and f"StudyInstanceUID={marker}" in log:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the requests never reached the log")
    assert "_auth_token" not in log
    assert "key_" not in log
    values = [k["value"] for k in world.keys.values()] + list(world.values.values())
    for value in values:
        assert value.split(".")[2] not in log  # not even the signature
    for line in log.splitlines():
        if "/dicomweb" in line:
            assert "eyJ" not in line, line
