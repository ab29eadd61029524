"""Two servers on one data dir sharing revocations through a real redis-server."""

import socket
import time

import pytest
import requests

from helpers import dataset, part10, provision
from live import LiveServer, config


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
    # Behind one load balancer: the same public URL, so the same documents and cache keys.
    shared = ("--redis", redis_server.url, "--public-url", "https://pacs.example.org")
    first = LiveServer(data_dir, *shared).start()
    second = LiveServer(data_dir, *shared).start()
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
    from litevna.service import open_backends

    index, keyring = open_backends(config(node.data_dir))
    try:
        return Accounts(index, keyring, time.time).create_api_key("demo")["value"]
    finally:
        index.close()


def _redis_stat(redis_server, name):
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply and not reply.endswith(b"\r\n") or len(reply) < 64:
            reply += sock.recv(65536)
    for line in reply.decode().splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":")[1])
    raise AssertionError(f"no {name} in INFO stats")


def _stow(node, key):
    ds = dataset(rows=32, columns=32)
    response = requests.post(f"{node.url}/demo/dicomweb/studies", data=part10(ds), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    return ds


def _urls(ds):
    study = f"/demo/dicomweb/studies/{ds.StudyInstanceUID}"
    instance = f"{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    return {"rendered": (instance + "/frames/1/rendered", "image/jpeg"),
            "metadata": (study + "/metadata", "application/dicom+json"),
            "search": (f"/demo/dicomweb/studies?StudyInstanceUID={ds.StudyInstanceUID}",
                       "application/dicom+json")}


def test_what_one_node_built_the_other_answers_from_redis(nodes, redis_server):
    first, second, key = nodes
    ds = _stow(first, key)
    headers = {"Authorization": f"Bearer {key}"}
    for name, (path, accept) in _urls(ds).items():
        built = requests.get(first.url + path, headers={**headers, "Accept": accept})
        assert built.status_code == 200, (name, built.text)
        hits = _redis_stat(redis_server, "keyspace_hits")
        shared = requests.get(second.url + path, headers={**headers, "Accept": accept})
        assert shared.status_code == 200 and shared.content == built.content, name
        assert _redis_stat(redis_server, "keyspace_hits") > hits, f"{name} not from Redis"


def test_redis_stopped_mid_run(nodes, redis_server):
    first, second, key = nodes
    token = _token(first, "demo", key)
    ds = _stow(first, key)
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
        # The shared cache is simply not asked: everything is built locally.
        for name, (path, accept) in _urls(ds).items():
            response = requests.get(second.url + path, headers={
                "Authorization": f"Bearer {key}", "Accept": accept})
            assert response.status_code == 200, (name, response.text)
    finally:
        redis_server.start()
    for node in (first, second):
        _until_ready(node)
    assert _status(second, "demo", token) == 401
    for node in (first, second):
        assert "Traceback" not in node.log()
