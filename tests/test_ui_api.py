"""The JSON account API of the web UI (SPEC §2) over real HTTP, and the session rules
of litevna.accounts with a fake clock."""

import itertools
import os
import time

import pytest
import requests
from twisted.trial.unittest import SynchronousTestCase

from helpers import DICOM, DataDir, bearer, instance, new_uid, referenced
from live import LiveServer
from litevna.accounts import SESSION_SECONDS, AccountError, Accounts, session_key
from litevna.auth.keys import Keyring
from litevna.index.sqlite import SqliteIndex
from helpers import FakeClock

PASSWORD = "correct horse battery"
_accounts = itertools.count(1)
_labels = itertools.count(1)
pytestmark = pytest.mark.usefixtures("clean_log")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("ui-data")) as server:
        yield server


@pytest.fixture(scope="module")
def clean_log(live):
    """Nothing these tests send makes the server log a traceback."""
    yield
    assert "Traceback" not in live.log() and "Unhandled" not in live.log(), live.log()[-5000:]


class Browser(requests.Session):
    """A client with a cookie jar, logged in as one account: ``csrf`` is its session's."""

    def __init__(self, base, email=None):
        super().__init__()
        self.base = base
        self.email = email or f"user{next(_accounts)}-{os.getpid()}@example.org"
        self.csrf = None

    def sign_up(self):
        response = self.post(self.base + "/accounts",
                             json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        self.csrf = response.json()["csrfToken"]
        return response

    def change(self, method, path, **kwargs):
        """A state-changing request with the session's CSRF header."""
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return self.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def create_store(self):
        label = f"ui{next(_labels)}-{os.getpid()}"
        response = self.change("POST", "/image-stores", json={"label": label})
        assert response.status_code == 201, response.text
        return label

    def create_key(self, label, **body):
        response = self.change("POST", f"/image-stores/{label}/api-keys", json=body)
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def user(live):
    with Browser(live.url) as browser:
        browser.sign_up()
        yield browser


def set_cookies(response):
    """{name: (value, {attribute lower-cased: value})} of a response's Set-Cookie headers."""
    cookies = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        pair, *attributes = [part.strip() for part in header.split(";")]
        name, _, value = pair.partition("=")
        cookies[name] = (value, {a.partition("=")[0].lower(): a.partition("=")[2]
                                 for a in attributes})
    return cookies


def stow(base, label, key, **attributes):
    """STOW one synthetic CT instance with key; its (study UID, SOP Instance UID)."""
    study = new_uid()
    data = instance(study_uid=study, **attributes)
    response = requests.post(f"{base}/{label}/dicomweb/studies", data=data, timeout=30,
                             headers={**bearer(key), "Content-Type": DICOM})
    assert response.status_code == 200, response.text
    return study, referenced(response.json())[0]


def qido_status(base, label, key):
    return requests.get(f"{base}/{label}/dicomweb/studies", headers=bearer(key),
                        timeout=30).status_code


def eventually(check, within=1.0):
    """Poll check() until it is true; fail if it is not within the given seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within %.1f s" % within
        time.sleep(0.02)


def test_sign_up_logs_in_with_a_strict_session_cookie(live):
    with Browser(live.url) as browser:
        response = browser.sign_up()
        assert response.json()["email"] == browser.email
        value, attributes = set_cookies(response)["litevna-session"]
        assert len(value) >= 43  # 32 random bytes, urlsafe base64
        assert "httponly" in attributes
        assert attributes["samesite"].lower() == "strict"
        assert attributes["path"] == "/"
        assert "secure" not in attributes  # plain HTTP here
        assert browser.get(live.url + "/image-stores").json() == {"stores": []}


def test_the_index_keeps_only_a_hash_of_the_session(live, user):
    value = user.cookies["litevna-session"]
    ids = [row[0] for row in DataDir(live.data_dir).select("SELECT id FROM sessions")]
    assert session_key(value) in ids and value not in ids


def test_sign_up_refusals(live, user):
    def sign_up(body, **kwargs):
        return requests.post(live.url + "/accounts", json=body, timeout=30, **kwargs)

    assert sign_up({"email": "not-an-email", "password": PASSWORD}).status_code == 400
    assert sign_up({"email": "short@example.org", "password": "short"}).status_code == 400
    assert sign_up({"email": user.email.upper(), "password": PASSWORD}).status_code == 409
    assert sign_up({"email": "x@example.org", "password": PASSWORD, "admin": True}
                   ).status_code == 400
    form = requests.post(live.url + "/accounts", data={"email": "f@example.org",
                                                       "password": PASSWORD}, timeout=30)
    assert form.status_code == 415


def test_login(live, user):
    def log_in(email, password):
        return requests.post(live.url + "/login", json={"email": email, "password": password},
                             timeout=30)

    wrong = log_in(user.email, "wrong password")
    unknown = log_in("nobody@example.org", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"]  # which emails exist stays secret
    assert "litevna-session" not in set_cookies(wrong)
    right = log_in(user.email, PASSWORD)
    assert right.status_code == 200
    assert right.json()["email"] == user.email and right.json()["csrfToken"]
    assert right.json()["csrfToken"] != user.csrf  # a session of its own
    assert "httponly" in set_cookies(right)["litevna-session"][1]
    text_plain = requests.post(live.url + "/login", data='{"email": "a", "password": "b"}',
                               headers={"Content-Type": "text/plain"}, timeout=30)
    assert text_plain.status_code == 415  # what a cross-site form could send


def test_every_route_but_sign_up_and_login_needs_the_session(live, user):
    label = user.create_store()
    anonymous = [("GET", "/image-stores"), ("POST", "/image-stores"),
                 ("GET", f"/image-stores/{label}"), ("DELETE", f"/image-stores/{label}"),
                 ("GET", f"/image-stores/{label}/api-keys"),
                 ("POST", f"/image-stores/{label}/api-keys"),
                 ("DELETE", f"/image-stores/{label}/api-keys/abc"), ("POST", "/logout")]
    for method, path in anonymous:
        response = requests.request(method, live.url + path, json={}, timeout=30)
        assert response.status_code == 401, (method, path, response.text)
    forged = requests.get(live.url + "/image-stores", cookies={"litevna-session": "forged"},
                          timeout=30)
    assert forged.status_code == 401


def test_state_changes_need_the_csrf_token(live, user):
    def create(headers):
        return user.post(live.url + "/image-stores", json={"label": f"csrf{next(_labels)}"},
                         headers=headers, timeout=30)

    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": user.csrf[:-1] + "x"}):
        response = create(headers)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "CSRF token missing or wrong"
    assert create({"X-CSRF-Token": user.csrf}).status_code == 201
    label = user.create_store()
    assert user.delete(f"{live.url}/image-stores/{label}", timeout=30).status_code == 403
    assert user.post(f"{live.url}/image-stores/{label}/api-keys", json={},
                     timeout=30).status_code == 403
    assert user.post(f"{live.url}/logout", timeout=30).status_code == 403
    assert user.get(f"{live.url}/image-stores/{label}").status_code == 200  # reads need none


def test_stores(live, user):
    label = user.create_store()
    assert user.get(live.url + "/image-stores").json()["stores"] == [
        {"label": label, "createdAt": pytest.approx(time.time() * 1000, abs=60_000)}]
    taken = user.change("POST", "/image-stores", json={"label": label})
    assert taken.status_code == 409 and label in taken.json()["error"]
    for bad in ("ab", "Upper", "1abc", "image-stores", "static", "", None, 7):
        assert user.change("POST", "/image-stores", json={"label": bad}).status_code == 400, bad
    detail = user.get(f"{live.url}/image-stores/{label}").json()
    assert detail["dicomweb"] == f"{live.url}/{label}/dicomweb"
    assert detail["apiKeys"] == []
    assert user.get(f"{live.url}/image-stores/no-such-store").status_code == 404


def test_another_accounts_store_does_not_exist_for_you(live, user):
    label = user.create_store()
    key = user.create_key(label)
    with Browser(live.url) as other:
        other.sign_up()
        assert other.get(live.url + "/image-stores").json() == {"stores": []}
        for method, path in [("GET", f"/image-stores/{label}"),
                             ("DELETE", f"/image-stores/{label}"),
                             ("GET", f"/image-stores/{label}/api-keys"),
                             ("POST", f"/image-stores/{label}/api-keys"),
                             ("DELETE", f"/image-stores/{label}/api-keys/{key['id']}")]:
            response = other.change(method, path, json={})
            assert response.status_code == 404, (method, path)
            assert response.json()["error"] == user.get(
                f"{live.url}/image-stores/no-such-store").json()["error"].replace(
                "no-such-store", label)
    assert qido_status(live.url, label, key["value"]) == 200  # the key still works


def test_deleting_a_store(live, user):
    label = user.create_store()
    key = user.create_key(label)["value"]
    stow(live.url, label, key)
    blobs = os.path.join(live.data_dir, "blobs")
    folders = set(os.listdir(blobs))
    assert user.change("DELETE", f"/image-stores/{label}").status_code == 204
    assert user.get(f"{live.url}/image-stores/{label}").status_code == 404
    assert label not in [s["label"] for s in user.get(live.url + "/image-stores").json()["stores"]]
    eventually(lambda: qido_status(live.url, label, key) == 401)
    assert len(set(os.listdir(blobs))) == len(folders) - 1  # its blob folder is gone
    assert user.change("DELETE", f"/image-stores/{label}").status_code == 404


def test_a_store_made_again_under_a_deleted_label_starts_empty(live, user):
    label = user.create_store()
    key = user.create_key(label)["value"]
    stow(live.url, label, key, PatientName="Deleted^Store")
    assert qido_status(live.url, label, key) == 200
    assert user.change("DELETE", f"/image-stores/{label}").status_code == 204
    assert user.change("POST", "/image-stores", json={"label": label}).status_code == 201
    key = user.create_key(label)["value"]
    study, _ = stow(live.url, label, key, PatientName="New^Store")
    found = requests.get(f"{live.url}/{label}/dicomweb/studies", headers=bearer(key),
                         timeout=30).json()
    assert [item["0020000D"]["Value"][0] for item in found] == [study]


def test_api_keys(live, user):
    label = user.create_store()
    everything = user.create_key(label, name="bridge")
    assert everything["name"] == "bridge" and everything["expiresAt"] is None
    assert everything["permissions"] == ["read", "write", "delete"]
    reader = user.create_key(label, permissions=["read"], expiresIn=3600)
    assert reader["permissions"] == ["read"]
    assert reader["expiresAt"] == pytest.approx((time.time() + 3600) * 1000, abs=60_000)
    assert qido_status(live.url, label, everything["value"]) == 200
    assert qido_status(live.url, label, reader["value"]) == 200
    refused = requests.post(f"{live.url}/{label}/dicomweb/studies", data=instance(), timeout=30,
                            headers={**bearer(reader["value"]), "Content-Type": DICOM})
    assert refused.status_code == 403  # read only
    for response in (user.get(f"{live.url}/image-stores/{label}/api-keys"),
                     user.get(f"{live.url}/image-stores/{label}")):
        assert everything["value"] not in response.text and reader["value"] not in response.text
        assert '"value"' not in response.text
    listed = user.get(f"{live.url}/image-stores/{label}/api-keys").json()["apiKeys"]
    assert [(k["id"], k["name"], k["permissions"], k["revokedAt"]) for k in listed] == [
        (everything["id"], "bridge", ["read", "write", "delete"], None),
        (reader["id"], "", ["read"], None)]
    for bad in ({"permissions": []}, {"permissions": ["admin"]}, {"permissions": "read"},
                {"expiresIn": 0}, {"expiresIn": "soon"}, {"name": 5}, {"value": "mine"}):
        response = user.change("POST", f"/image-stores/{label}/api-keys", json=bad)
        assert response.status_code == 400, bad


def test_revoking_a_key_kills_its_tokens_within_a_second(live, user):
    label = user.create_store()
    key = user.create_key(label)
    token = requests.post(f"{live.url}/image-stores/{label}/tokens/create", timeout=30,
                          json={"api_key_value": key["value"], "ttl": 600}).json()["token"]
    other = user.create_key(label)
    assert qido_status(live.url, label, token) == 200
    assert user.change("DELETE", f"/image-stores/{label}/api-keys/{key['id']}").status_code == 204
    eventually(lambda: qido_status(live.url, label, key["value"]) == 401
               and qido_status(live.url, label, token) == 401)
    assert qido_status(live.url, label, other["value"]) == 200
    listed = {k["id"]: k for k in user.get(f"{live.url}/image-stores/{label}/api-keys").json()[
        "apiKeys"]}
    assert listed[key["id"]]["revokedAt"] is not None and not listed[key["id"]]["active"]
    assert listed[other["id"]]["revokedAt"] is None
    assert user.change("DELETE", f"/image-stores/{label}/api-keys/nope").status_code == 404


def test_logout(live, user):
    response = user.change("POST", "/logout")
    assert response.status_code == 204
    value, attributes = set_cookies(response)["litevna-session"]
    assert value == "" and attributes["max-age"] == "0"
    assert user.get(live.url + "/image-stores").status_code == 401


def test_log_in_form_with_double_submit_token(live, user):
    with requests.Session() as browser:
        page = browser.get(live.url + "/login")
        assert page.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self'
        token = browser.cookies["litevna-csrf"]
        assert f'value="{token}"' in page.text
        form = {"email": user.email, "password": PASSWORD, "csrf": token}
        forged = requests.post(live.url + "/login", data=form, timeout=30,
                               allow_redirects=False)  # the field alone, no cookie
        assert forged.status_code == 403 and "litevna-session" not in set_cookies(forged)
        wrong = browser.post(live.url + "/login", data={**form, "password": "nope"},
                             allow_redirects=False)
        assert wrong.status_code == 401 and "wrong email or password" in wrong.text
        right = browser.post(live.url + "/login", data=form, allow_redirects=False)
        assert right.status_code == 303 and right.headers["Location"] == "/ui/stores"
        stores = browser.get(live.url + "/ui/stores")
        assert stores.status_code == 200 and user.email in stores.text


def test_sign_up_form(live):
    with requests.Session() as browser:
        browser.get(live.url + "/signup")
        form = {"email": f"form-{os.getpid()}@example.org", "password": PASSWORD,
                "password2": PASSWORD, "csrf": browser.cookies["litevna-csrf"]}

        def sign_up(**changes):
            return browser.post(live.url + "/signup", data={**form, **changes},
                                allow_redirects=False, timeout=30)

        differ = sign_up(password2="something else")
        assert differ.status_code == 400 and "The two passwords differ." in differ.text
        assert sign_up(csrf="").status_code == 403
        assert sign_up(email="nope").status_code == 400
        made = sign_up()
        assert made.status_code == 303 and made.headers["Location"] == "/ui/stores"
        assert "litevna-session" in set_cookies(made)
        taken = sign_up()
        assert taken.status_code == 409 and "already exists" in taken.text


def test_token_form_sets_a_cookie_for_the_store_only(live, user):
    label = user.create_store()
    key = user.create_key(label, permissions=["read"])
    response = user.post(f"{live.url}/ui/stores/{label}/tokens", timeout=30,
                         data={"csrf": user.csrf, "key_id": key["id"], "ttl": "900",
                               "study_ids": "", "patient_ids": ""})
    assert response.status_code == 200, response.text
    value, attributes = set_cookies(response)["litevna-token"]
    assert value in response.text  # shown once, on this page
    assert attributes["path"] == f"/{label}/" and attributes["max-age"] == "900"
    assert attributes["samesite"].lower() == "lax" and "httponly" in attributes
    assert qido_status(live.url, label, value) == 200
    assert requests.get(f"{live.url}/{label}/dicomweb/studies", cookies={"litevna-token": value},
                        timeout=30).status_code == 200
    # The session alone never reads DICOMweb (SPEC §3 names five methods; it is none).
    session_only = {"litevna-session": user.cookies["litevna-session"]}
    assert requests.get(f"{live.url}/{label}/dicomweb/studies", cookies=session_only,
                        timeout=30).status_code == 401
    refused = user.post(f"{live.url}/ui/stores/{label}/tokens", timeout=30,
                        data={"key_id": key["id"], "ttl": "900"})
    assert refused.status_code == 403 and "litevna-token" not in set_cookies(refused)


def test_viewer_needs_a_series(live, user):
    label = user.create_store()
    assert user.get(f"{live.url}/ui/stores/{label}/viewer").status_code == 400
    assert user.get(f"{live.url}/ui/stores/{label}/viewer?study=1.2&series=../x").status_code \
        == 400
    assert user.get(f"{live.url}/ui/stores/someone-elses/studies").status_code == 404


def test_static_files_are_versioned_and_cached(live, user):
    page = user.get(live.url + "/ui/stores").text
    (href,) = [part.split('"')[0] for part in page.split('href="/static/')[1:]]
    css = requests.get(f"{live.url}/static/{href}", timeout=30)
    assert css.headers["Content-Type"].startswith("text/css")
    assert "immutable" in css.headers["Cache-Control"]
    assert "immutable" not in requests.get(f"{live.url}/static/litevna.css?v=old",
                                           timeout=30).headers["Cache-Control"]
    assert requests.get(f"{live.url}/static/..%2Fpages.py", timeout=30).status_code == 404


class SessionTests(SynchronousTestCase):
    """Accounts' sessions and token principals, over an in-memory index."""

    def setUp(self):
        self.clock = FakeClock()
        self.index = SqliteIndex(":memory:", self.clock)
        self.index.migrate()
        self.accounts = Accounts(self.index, Keyring(self.mktemp()), self.clock)
        self.account_id = self.accounts.create_account("a@example.org", PASSWORD)

    def test_session_lives_fourteen_days(self):
        opened = self.accounts.open_session(self.account_id)
        self.assertEqual(self.accounts.session(opened["value"])["email"], "a@example.org")
        self.clock.now += SESSION_SECONDS - 1
        self.assertIsNotNone(self.accounts.session(opened["value"]))
        self.clock.now += 1
        self.assertIsNone(self.accounts.session(opened["value"]))

    def test_closed_and_unknown_sessions(self):
        opened = self.accounts.open_session(self.account_id)
        self.accounts.close_session(opened["value"])
        self.assertIsNone(self.accounts.session(opened["value"]))
        self.assertIsNone(self.accounts.session(None))
        self.assertIsNone(self.accounts.session("made-up"))

    def test_authenticate(self):
        self.assertEqual(self.accounts.authenticate(" A@example.org ", PASSWORD)["id"],
                         self.account_id)
        self.assertIsNone(self.accounts.authenticate("a@example.org", "wrong"))
        self.assertIsNone(self.accounts.authenticate("b@example.org", PASSWORD))
        self.assertIsNone(self.accounts.authenticate(None, None))

    def test_key_principal(self):
        self.accounts.create_store("demo", "a@example.org")
        store = self.index.store_by_label("demo")
        key = self.accounts.create_api_key("demo", permissions=("read",), expires_in=60)
        principal = self.accounts.key_principal(store, key["id"])
        self.assertEqual((principal.label, principal.key_id, principal.permissions,
                          principal.expires_at), ("demo", key["id"], {"read"}, self.clock() + 60))
        self.clock.now += 60
        self.assertRaises(AccountError, self.accounts.key_principal, store, key["id"])
        other = self.accounts.create_api_key("demo")
        self.accounts.revoke_api_key("demo", other["id"])
        self.assertRaises(AccountError, self.accounts.key_principal, store, other["id"])
        self.assertRaises(AccountError, self.accounts.key_principal, store, "nope")

    def test_owned_store(self):
        self.accounts.create_store("demo", "a@example.org")
        other = self.accounts.create_account("b@example.org", PASSWORD)
        self.assertEqual(self.accounts.owned_store(self.account_id, "demo")["label"], "demo")
        self.assertIsNone(self.accounts.owned_store(other, "demo"))
        self.assertIsNone(self.accounts.owned_store(self.account_id, "none"))
