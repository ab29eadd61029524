"""Two servers on one data dir sharing revocations through a real redis-server."""

import time

import pytest
import requests

from helpers import provision
from live import LiveServer


def _token(server, label, key, **extra):
    response = requests.post(f"{server.url}/image-stores/{label}/tokens/create",
                             json={"api_key_value": key, "ttl": 600, **extra})
    assert response.status_code == 200, response.text
    return response.json()["token"]


def _status(server, label, token):
    return requests.get(f"{server.url}/{label}/dicomweb/studies",
                        headers={"Authorization": f"Bearer {token}"}).status_code


def _until_status(server, label, token, status, timeout):
    started = time.monotonic()
    while _status(server, label, token) != status:
        assert time.monotonic() - started < timeout, f"still not {status} after {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, redis_server):
    data_dir = tmp_path_factory.mktemp("shared")
    key = provision(data_dir, "demo")
    first = LiveServer(data_dir, "--redis", redis_server.url).start()
    second = LiveServer(data_dir, "--redis", redis_server.url).start()
    for node in (first, second):
        _until_ready(node)
    yield first, second, key
    first.stop()
    second.stop()


def _until_ready(node, ready=True, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(node.url + "/readyz").json()
        if (body["status"] == "ready") == ready:
            return body
        time.sleep(0.05)
    raise AssertionError(f"/readyz never said ready={ready}: {body}")


def test_token_revoked_on_one_node_refused_on_the_other(nodes):
    first, second, key = nodes
    token = _token(first, "demo", key)
    assert _status(second, "demo", token) == 200
    revoked = requests.post(f"{first.url}/image-stores/demo/tokens/revoke", json={"token": token})
    assert revoked.status_code == 200 and revoked.json()["type"] == "token"
    assert _until_status(second, "demo", token, 401, timeout=1.0) < 1.0


def test_key_revoked_kills_its_tokens_everywhere(nodes):
    first, second, _ = nodes
    value = provision_key(first)
    token = _token(second, "demo", value)
    assert _status(first, "demo", token) == 200
    response = requests.post(f"{second.url}/image-stores/demo/tokens/revoke",
                             json={"token": value})
    assert response.json()["type"] == "api-key"
    assert _until_status(first, "demo", token, 401, timeout=1.0) < 1.0
    assert _status(first, "demo", value) == 401


def provision_key(node):
    from litevna.accounts import Accounts
    from litevna.config import Config
    from litevna.service import open_backends

    index, keyring = open_backends(Config.from_options({"data-dir": node.data_dir}))
    try:
        return Accounts(index, keyring, time.time).create_api_key("demo")["value"]
    finally:
        index.close()


def test_redis_stopped_mid_run(nodes, redis_server):
    first, second, key = nodes
    token = _token(first, "demo", key)
    redis_server.stop()
    try:
        body = _until_ready(first, ready=False)
        assert body["failing"] == ["redis"]
        # Still serving, and revocations still reach the other node through the index.
        assert _status(first, "demo", token) == 200
        assert requests.post(f"{first.url}/image-stores/demo/tokens/revoke",
                             json={"token": token}).status_code == 200
        assert _until_status(second, "demo", token, 401, timeout=1.0) < 1.0
        assert _status(second, "demo", key) == 200
    finally:
        redis_server.start()
    for node in (first, second):
        _until_ready(node)
    assert _status(second, "demo", token) == 401
    for node in (first, second):
        assert "Traceback" not in node.log()
