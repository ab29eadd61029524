"""``GET /metrics`` (SPEC §1) and the access log of ``--log-format json``: route families,
stored and deleted instances, cache lookups, refused requests, workers summed; no UID,
label or credential in a label value or a log line (SPEC §3)."""

import base64
import gzip
import io
import json
import os
import re
import secrets
import signal
import socket
import time
import uuid

import psutil
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from helpers import _ROOT, bearer, dataset, instance, multipart, multipart_type, part10
from live import LiveServer
from litevna.cache.memory import MemoryCache
from litevna.http.errors import HTTPError
from litevna.http.site import LINGER_SECONDS, LiteSite
from litevna.logs import json_observer, safe_path
from litevna.metrics import FAMILIES, Metrics, method_label, route_family
from litevna.web import Application

LABEL = "demo"
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"}
CACHES = {"metadata", "search", "rendered"}
BOUNDARY = "m3trics"


def samples(text):
    """{(sample name, sorted label items): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def counted(found, route, method, status):
    return value(found, "litevna_http_requests_total", route=route, method=method,
                 status=str(status))


# The route families, without a server.

_SAMPLE_VALUES = {"label": "demo", "study": "1.2.3", "study_uid": "1.2.3", "series": "1.2.3.4",
                  "sop": "1.2.3.4.5", "frame_list": "1,2", "tag_path": "7FE00010",
                  "upload_id": str(uuid.UUID(int=7)), "name": "litevna.js", "key_id": "k1"}
_ENDPOINT_FAMILIES = {
    "healthz": "health", "readyz": "health", "prometheus_metrics": "metrics", "stow": "stow",
    "upload_url": "upload_url", "upload_put": "upload_put", "retrieve": "wado_retrieve",
    "metadata": "wado_metadata", "frames": "wado_frames", "bulkdata": "wado_bulkdata",
    "delete": "delete", "create_token": "tokens", "revoke_token": "tokens",
    "ui_static": "static",
}
_SEARCH_FAMILIES = {"study": "qido_studies", "series": "qido_series",
                    "instance": "qido_instances"}


def _family_of_endpoint(rule):
    endpoint = rule.endpoint
    if endpoint == "search":
        return _SEARCH_FAMILIES[rule.defaults["level"]]
    for prefix, family in (("rendered_", "rendered"), ("thumbnail_", "thumbnail"),
                           ("api_", "accounts_api")):
        if endpoint.startswith(prefix):
            return family
    if endpoint.startswith("ui_") and endpoint != "ui_static":
        return "ui_pages"
    return _ENDPOINT_FAMILIES[endpoint]  # a KeyError: a new route needs its family here


def _sample_path(rule):
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: _SAMPLE_VALUES[m.group(1)], rule.rule)


_SEGMENTS = ["", "demo", "dicomweb", "studies", "series", "instances", "metadata", "frames",
             "frame", "bulkdata", "rendered", "thumbnail", "upload-url", "uploads", "ui",
             "image-stores", "tokens", "create", "static", "login", "metrics", "healthz",
             "1.2.3", "key_abc", "..", "%2F"]


class RouteFamilyTests(SynchronousTestCase):
    def test_every_route_maps_to_its_family(self):
        adapter = Application.app.url_map.bind("localhost")
        rules = list(Application.app.url_map.iter_rules())
        self.assertGreater(len(rules), 50)
        for rule in rules:
            path = _sample_path(rule)
            for method in sorted(rule.methods):
                with self.subTest(endpoint=rule.endpoint, path=path, method=method):
                    endpoint, _ = adapter.match(path, method)
                    self.assertEqual(endpoint, rule.endpoint)  # the sample path is this rule's
                    self.assertEqual(route_family(method.encode(), path.encode()),
                                     _family_of_endpoint(rule))

    def test_what_no_route_answers_is_other(self):
        for path in (b"/nope", b"/demo", b"/demo/dicomweb", b"/demo/dicomweb/",
                     b"/demo/dicomweb/studies/1/series/2/instances/3/frames",
                     b"/demo/key_T/dicomwebx", b"/static/a/b", b"/uploads/demo"):
            with self.subTest(path=path):
                self.assertEqual(route_family(b"GET", path), "other")

    def test_method_decides_where_paths_are_shared(self):
        study = b"/demo/dicomweb/studies/1.2.3"
        self.assertEqual(route_family(b"POST", study), "stow")
        self.assertEqual(route_family(b"GET", study), "wado_retrieve")
        self.assertEqual(route_family(b"DELETE", study), "delete")
        self.assertEqual(route_family(b"POST", b"/demo/dicomweb/studies"), "stow")
        self.assertEqual(route_family(b"OPTIONS", b"/demo/dicomweb/studies"), "qido_studies")

    @settings(max_examples=500, deadline=None)
    @given(method=st.binary(max_size=12),
           path=st.one_of(st.binary(max_size=300),
                          st.lists(st.one_of(st.sampled_from(_SEGMENTS), st.text(max_size=12)),
                                   max_size=10).map(lambda s: "/" + "/".join(s))
                          .map(lambda s: s.encode("utf-8", "surrogatepass"))))
    def test_any_request_maps_to_a_fixed_family(self, method, path):
        self.assertIn(route_family(method, path), FAMILIES)
        self.assertIn(method_label(method), METHODS)

    def test_families_are_few_and_fixed(self):
        self.assertEqual(len(FAMILIES), len(set(FAMILIES)))
        self.assertIn("other", FAMILIES)
        self.assertLess(len(FAMILIES), 25)


class MetricsTests(SynchronousTestCase):
    def test_applications_have_their_own_registries(self):
        one, two = Metrics(), Metrics()
        one.request_ended(b"GET", b"/healthz", 200, 0.001)
        one.instances_stored(2, 300)
        found = samples(one.exposition().decode())
        self.assertEqual(counted(found, "health", "GET", 200), 1)
        self.assertEqual(value(found, "litevna_instances_stored_total"), 2)
        self.assertEqual(value(found, "litevna_bytes_stored_total"), 300)
        found = samples(two.exposition().decode())
        self.assertEqual(counted(found, "health", "GET", 200), 0)
        self.assertEqual(value(found, "litevna_instances_stored_total"), 0)

    def test_info_and_unknown_methods(self):
        metrics = Metrics(version="9.9", kernel="numpy")
        metrics.request_ended(b"BREW", b"/demo/dicomweb/studies", 405, 0.0)
        found = samples(metrics.exposition().decode())
        self.assertEqual(value(found, "litevna_info", version="9.9", kernel="numpy"), 1)
        self.assertEqual(counted(found, "qido_studies", "other", 405), 1)

    def test_watched_cache_counts_hits_misses_and_bytes(self):
        metrics = Metrics()
        cache = metrics.watch(MemoryCache(1000, name="search"))
        self.assertIsNone(cache.get("a"))
        cache.put("a", b"x" * 100)
        self.assertEqual(cache.get("a"), b"x" * 100)
        self.assertEqual(cache.get("a"), b"x" * 100)
        found = samples(metrics.exposition().decode())
        self.assertEqual(value(found, "litevna_cache_requests_total", cache="search",
                               result="miss"), 1)
        self.assertEqual(value(found, "litevna_cache_requests_total", cache="search",
                               result="hit"), 2)
        self.assertEqual(value(found, "litevna_cache_bytes", cache="search"), 100)


class MemoryCacheEventTests(SynchronousTestCase):
    def test_events_without_change_of_behaviour(self):
        events = []
        cache = MemoryCache(400, name="metadata")
        cache.on_event = lambda c, event: events.append((c.name, event))
        self.assertIsNone(cache.get("k"))
        cache.put("k", b"v" * 100)
        cache.put("big", b"v" * 101)  # over a quarter of the cache: not kept, no event
        self.assertEqual(cache.get("k"), b"v" * 100)
        self.assertIsNone(cache.get("big"))
        self.assertEqual(events, [("metadata", "miss"), ("metadata", "put"),
                                  ("metadata", "hit"), ("metadata", "miss")])
        self.assertEqual((cache.hits, cache.misses, cache.stored_bytes), (1, 2, 100))

    def test_unnamed_cache_without_hook(self):
        cache = MemoryCache(400)
        cache.put("k", b"v")
        self.assertEqual(cache.get("k"), b"v")
        self.assertIsNone(cache.name)


class _Pending(Resource):
    """Answers nothing until the test finishes the request."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


class SiteReportTests(SynchronousTestCase):
    """The site counts and logs each request once, at its end, over an in-memory connection."""

    def setUp(self):
        self.clock = MemoryReactorClock()
        self.metrics = Metrics()
        self.resource = _Pending()
        self.router = lambda request, method, path, length: None
        self.site = LiteSite(self.resource, body_router=lambda *a: self.router(*a),
                             metrics=self.metrics, timer=self.clock.seconds, reactor=self.clock)
        self.events = []
        observer = self.events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def connect(self, data):
        channel = self.site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return channel, transport

    def found(self):
        return samples(self.metrics.exposition().decode())

    def access_events(self):
        return [e for e in self.events if e.get("log_namespace") == "litevna.access"]

    def test_duration_from_headers_to_the_end_of_the_response(self):
        token = "SECRET" + secrets.token_hex(8)
        self.connect(f"GET /demo/key_{token}/dicomweb/studies?limit=2&_auth_token={token} "
                     "HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\n\r\n".encode())
        self.assertEqual(value(self.found(), "litevna_requests_in_flight"), 1)
        self.clock.advance(0.25)
        request = self.resource.requests[0]
        request.write(b"[]")
        request.finish()
        found = self.found()
        self.assertEqual(counted(found, "qido_studies", "GET", 200), 1)
        self.assertEqual(value(found, "litevna_http_request_duration_seconds_sum",
                               route="qido_studies", method="GET"), 0.25)
        self.assertEqual(value(found, "litevna_requests_in_flight"), 0)
        [event] = self.access_events()
        self.assertEqual((event["method"], event["path"], event["query"], event["protocol"],
                          event["status"], event["bytes"], event["duration_ms"],
                          event["user_agent"]),
                         ("GET", "/demo/dicomweb/studies", "?limit=2", "HTTP/1.1", 200, 2,
                          250.0, "probe/1"))
        self.assertNotIn(token, formatEvent(event))

    def test_a_client_gone_first_is_499(self):
        channel, _ = self.connect(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(counted(self.found(), "health", "GET", 499), 1)
        self.assertEqual(len(self.access_events()), 1)

    def test_a_refusal_counts_when_written_and_once(self):
        def refuse(request, method, path, length):
            raise HTTPError(401, "no credentials")

        self.router = refuse
        channel, transport = self.connect(
            b"POST /demo/dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401"))
        found = self.found()
        self.assertEqual(counted(found, "stow", "POST", 401), 1)
        self.assertEqual(value(found, "litevna_requests_in_flight"), 1)  # still lingering
        self.clock.advance(LINGER_SECONDS)
        channel.connectionLost(Failure(ConnectionDone()))
        found = self.found()
        self.assertEqual(counted(found, "stow", "POST", 401), 1)
        self.assertEqual(value(found, "litevna_http_request_duration_seconds_sum",
                               route="stow", method="POST"), 0)
        self.assertEqual(value(found, "litevna_requests_in_flight"), 0)
        self.assertEqual([e["status"] for e in self.access_events()], [401])


class LogTests(SynchronousTestCase):
    def test_safe_path_hides_key_segments_anywhere(self):
        self.assertEqual(safe_path(b"/demo/dicomweb/studies"), b"/demo/dicomweb/studies")
        self.assertEqual(safe_path(b"/demo/key_T0K/x"), b"/demo/[redacted]/x")
        self.assertEqual(safe_path(b"/demo/%6Bey_T0K/dicomweb"), b"/demo/[redacted]/dicomweb")
        self.assertEqual(safe_path(b"/demo/KEY%5fT0K"), b"/demo/[redacted]")
        self.assertEqual(safe_path(b"/a%20b/c"), b"/a%20b/c")

    def test_json_lines_carry_the_fields_the_message_names(self):
        out = io.StringIO()
        observe = json_observer(out)
        observe({"log_format": "stored {sop} in {ms}ms", "sop": "1.2.3", "ms": 3,
                 "unnamed": "kept out", "log_level": LogLevel.info, "log_namespace": "t",
                 "log_time": 0.0})
        observe({"log_format": "huge {n} {obj}", "n": 2 ** 70, "obj": object(),
                 "log_level": LogLevel.warn, "log_namespace": "t", "log_time": 0.0})
        first, second = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(first["message"], "stored 1.2.3 in 3ms")
        self.assertEqual((first["sop"], first["ms"], first["level"]), ("1.2.3", 3, "info"))
        self.assertNotIn("unnamed", first)
        self.assertEqual(second["n"], str(2 ** 70))
        self.assertTrue(second["obj"].startswith("<object object"))


# Against real servers: JSON and text logs over one data dir.

@pytest.fixture(scope="module")
def nodes(provisioned):
    json_node = LiveServer(provisioned.data_dir, "--log-format", "json").start()
    text_node = LiveServer(provisioned.data_dir).start()
    for node in (json_node, text_node):
        node.provisioned = provisioned
    yield {"json": json_node, "text": text_node}
    json_node.stop()
    text_node.stop()


@pytest.fixture(scope="module")
def node(nodes):
    return nodes["json"]


def root(node):
    return f"{node.url}/{LABEL}/dicomweb"


def scrape(node):
    response = requests.get(node.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(response.text)


def stow(node, parts, headers=None):
    return requests.post(f"{root(node)}/studies", data=multipart(parts, BOUNDARY), timeout=60,
                         headers={**(headers or bearer(node.provisioned.token)),
                                  "Content-Type": multipart_type(BOUNDARY)})


def raw_exchange(node, head):
    """Send request headers only; the status line of the answer."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_metrics_parse_and_name_every_metric(node):
    found = scrape(node)
    names = {name for name, _ in found}
    assert {"litevna_http_requests_total", "litevna_http_request_duration_seconds_bucket",
            "litevna_http_request_duration_seconds_count", "litevna_requests_in_flight",
            "litevna_instances_stored_total", "litevna_bytes_stored_total",
            "litevna_instances_deleted_total", "litevna_cache_requests_total",
            "litevna_cache_bytes", "litevna_info"} <= names
    [(_, info)] = [key for key in found if key[0] == "litevna_info"]
    assert dict(info)["kernel"] in ("compiled", "numpy")
    # No authentication, like /healthz (SPEC §1): no credentials were sent.
    assert requests.get(node.url + "/metrics", headers={"Authorization": "Bearer x"}).ok


def test_stored_counts_new_instances_only(node):
    parts = [instance(rows=8, columns=8, seed=n) for n in range(3)]
    before = scrape(node)
    assert stow(node, parts).status_code == 200
    after = scrape(node)
    assert value(after, "litevna_instances_stored_total") - \
        value(before, "litevna_instances_stored_total") == 3
    assert value(after, "litevna_bytes_stored_total") - \
        value(before, "litevna_bytes_stored_total") == sum(len(p) for p in parts)
    again = stow(node, parts)  # identical: success, nothing stored twice
    assert again.status_code == 200
    assert "already stored" in again.headers["Warning"]
    final = scrape(node)
    assert value(final, "litevna_instances_stored_total") == \
        value(after, "litevna_instances_stored_total")
    assert value(final, "litevna_bytes_stored_total") == value(after, "litevna_bytes_stored_total")


def _cache(found, name, result):
    return value(found, "litevna_cache_requests_total", cache=name, result=result)


def test_a_repeated_search_is_a_miss_then_a_hit(node):
    ds = dataset(rows=4, columns=4)
    assert stow(node, [part10(ds)]).status_code == 200
    url = f"{root(node)}/studies?StudyInstanceUID={ds.StudyInstanceUID}"
    headers = bearer(node.provisioned.token)
    before = scrape(node)
    assert len(requests.get(url, headers=headers).json()) == 1
    middle = scrape(node)
    assert requests.get(url, headers=headers).status_code == 200
    after = scrape(node)
    assert (_cache(middle, "search", "miss") - _cache(before, "search", "miss"),
            _cache(middle, "search", "hit") - _cache(before, "search", "hit")) == (1, 0)
    assert (_cache(after, "search", "miss") - _cache(middle, "search", "miss"),
            _cache(after, "search", "hit") - _cache(middle, "search", "hit")) == (0, 1)
    metadata = f"{root(node)}/studies/{ds.StudyInstanceUID}/metadata"
    requests.get(metadata, headers=headers)
    requests.get(metadata, headers=headers)
    final = scrape(node)
    assert _cache(final, "metadata", "miss") - _cache(after, "metadata", "miss") == 1
    assert _cache(final, "metadata", "hit") - _cache(after, "metadata", "hit") == 1
    assert value(final, "litevna_cache_bytes", cache="search") > 0


def _log_in(node):
    session = requests.Session()
    response = session.post(node.url + "/login", json={"email": "owner@example.org",
                                                       "password": "correct horse battery"})
    assert response.status_code == 200, response.text
    return session, response.json()["csrfToken"]


def test_each_family_counted_under_its_route_with_its_status(node):
    """One request of every family; each counted under its route with the status the
    client saw (refusals before the body included)."""
    token = node.provisioned.token
    headers = bearer(token)
    ds = dataset(rows=8, columns=8)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    target = f"{root(node)}/studies/{study}/series/{series}/instances/{sop}"
    before = scrape(node)
    seen = []

    def check(route, response, status=None):
        assert response.status_code < 500, response.text
        if status is not None:
            assert response.status_code == status, (route, response.text)
        seen.append((route, response.request.method, response.status_code))
        return response

    check("stow", requests.post(f"{root(node)}/studies/{study}", data=part10(ds),
                                headers={**headers, "Content-Type": "application/dicom"}), 200)
    up = check("upload_url", requests.post(f"{root(node)}/studies/upload-url", headers=headers),
               200).json()
    check("upload_put", requests.put(up["uploadUrl"], data=gzip.compress(instance()), headers={
        "Content-Type": "application/dicom", "Content-Encoding": "gzip"}), 200)
    check("stow", requests.post(f"{root(node)}/studies?uploadId={up['uploadId']}",
                                headers=headers), 200)
    check("qido_studies", requests.get(f"{root(node)}/studies", headers=headers), 200)
    check("qido_series", requests.get(f"{root(node)}/studies/{study}/series", headers=headers),
          200)
    check("qido_instances", requests.get(f"{root(node)}/instances", headers=headers), 200)
    check("wado_retrieve", requests.get(target, headers=headers), 200)
    check("wado_metadata", requests.get(f"{target}/metadata", headers=headers), 200)
    check("wado_frames", requests.get(f"{target}/frames/1", headers=headers), 200)
    check("wado_bulkdata", requests.get(f"{target}/bulkdata/7FE00010", headers=headers))
    check("rendered", requests.get(f"{target}/rendered", headers=headers), 200)
    check("thumbnail", requests.get(f"{target}/thumbnail", headers=headers), 200)
    check("tokens", requests.post(f"{node.url}/image-stores/{LABEL}/tokens/create",
                                  json={"api_key_value": token, "ttl": 60}), 200)
    check("accounts_api", requests.get(f"{node.url}/image-stores"), 401)
    session, _ = _log_in(node)
    check("accounts_api", session.get(f"{node.url}/image-stores/{LABEL}"), 200)
    check("ui_pages", requests.get(f"{node.url}/signup"), 200)
    check("static", requests.get(f"{node.url}/static/litevna.js"), 200)
    check("health", requests.get(f"{node.url}/readyz"), 200)
    check("other", requests.get(f"{node.url}/no/such/thing"), 404)
    check("wado_retrieve", requests.get(target), 401)
    check("delete", requests.delete(f"{root(node)}/studies/{study}", headers=headers), 204)
    # Refused in gotLength, before any body: no credentials; a body over --max-body; a
    # body over the small-body limit of a JSON route.
    host = f"Host: 127.0.0.1:{node.port}\r\n"
    assert raw_exchange(node, f"POST /{LABEL}/dicomweb/studies HTTP/1.1\r\n{host}"
                              "Content-Type: application/dicom\r\nContent-Length: 10\r\n\r\n") \
        == 401
    seen.append(("stow", "POST", 401))
    assert raw_exchange(node, f"POST /{LABEL}/dicomweb/studies HTTP/1.1\r\n{host}"
                              f"Authorization: Bearer {token}\r\n"
                              "Content-Type: application/dicom\r\n"
                              f"Content-Length: {1 << 40}\r\nExpect: 100-continue\r\n\r\n") == 413
    seen.append(("stow", "POST", 413))
    assert raw_exchange(node, f"POST /image-stores/{LABEL}/tokens/create HTTP/1.1\r\n{host}"
                              f"Content-Length: {10 << 20}\r\n\r\n") == 413
    seen.append(("tokens", "POST", 413))
    after = scrape(node)
    assert counted(after, "metrics", "GET", 200) > counted(before, "metrics", "GET", 200)
    for route, method, status in set(seen):
        expected = seen.count((route, method, status))
        assert counted(after, route, method, status) - counted(before, route, method, status) \
            >= expected, (route, method, status)
    assert value(after, "litevna_instances_deleted_total") - \
        value(before, "litevna_instances_deleted_total") == 1


def test_no_label_value_names_a_uid_a_store_or_a_token(node):
    ds = dataset(rows=4, columns=4)
    token = node.provisioned.token
    assert stow(node, [part10(ds)]).status_code == 200
    requests.get(f"{root(node)}/studies/{ds.StudyInstanceUID}/metadata", headers=bearer(token))
    requests.get(f"{node.url}/{LABEL}/key_{token}/dicomweb/studies")
    requests.get(f"{node.url}/{LABEL}/key_{token}/nowhere")
    requests.get(f"{root(node)}/studies?_auth_token={token}")
    text = requests.get(node.url + "/metrics").text
    for secret in (token, _ROOT, ds.StudyInstanceUID, f'"{LABEL}"', "key_", "_auth_token"):
        assert secret not in text
    allowed = {"route": set(FAMILIES), "method": METHODS, "cache": CACHES,
               "result": {"hit", "miss"}}
    for (name, labels) in samples(text):
        for label, label_value in labels:
            if label in allowed:
                assert label_value in allowed[label], (name, label, label_value)
            elif label == "status":
                assert re.fullmatch(r"[1-5]\d\d", label_value), (name, label_value)
            else:
                assert label in ("le", "version", "kernel"), (name, label)


def test_duration_counts_match_request_counts(node):
    requests.get(node.url + "/healthz")
    found = scrape(node)
    totals = {}
    for (name, labels), count in found.items():
        if name == "litevna_http_requests_total":
            key = tuple((k, v) for k, v in labels if k != "status")
            totals[key] = totals.get(key, 0) + count
    durations = {labels: count for (name, labels), count in found.items()
                 if name == "litevna_http_request_duration_seconds_count"}
    assert totals and totals == durations
    for labels, count in durations.items():
        assert value(found, "litevna_http_request_duration_seconds_bucket",
                     le="+Inf", **dict(labels)) == count


def _wait_for_line(node, marker, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if marker in node.log():
            return node.log()
        time.sleep(0.1)
    raise AssertionError(f"{marker} never reached the log")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_credential_reaches_a_log_line(nodes, log_format):
    node = nodes[log_format]
    key = node.provisioned.token
    made = requests.post(f"{node.url}/image-stores/{LABEL}/tokens/create",
                         json={"api_key_value": key, "ttl": 600})
    assert made.status_code == 200
    derived = made.json()["token"]
    forged = "eyJ" + secrets.token_urlsafe(24)
    agent = "metrics-test/" + secrets.token_hex(4)
    secrets_sent = [key, derived, forged]
    for token in (key, derived, forged):
        basic = base64.b64encode(f"litevna:{token}".encode()).decode()
        secrets_sent.append(basic)
        for url, headers, cookies in (
                (f"{root(node)}/studies", {"Authorization": f"Bearer {token}"}, None),
                (f"{root(node)}/studies", {"Authorization": f"Basic {basic}"}, None),
                (f"{node.url}/{LABEL}/key_{token}/dicomweb/studies", {}, None),
                (f"{root(node)}/studies", {}, {"litevna-token": token}),
                (f"{root(node)}/studies?_auth_token={token}&limit=1", {}, None),
                (f"{root(node)}/studies?limit=1&%5Fauth_token={token}", {}, None)):
            response = requests.get(url, headers={**headers, "User-Agent": agent,
                                                  "Referer": f"{url}&_auth_token={token}"},
                                    cookies=cookies)
            assert response.status_code == (401 if token == forged else 200), url
    up = requests.post(f"{root(node)}/studies/upload-url", headers=bearer(key)).json()
    signature = re.search(r"signature=([^&]+)", up["uploadUrl"]).group(1)
    secrets_sent += [signature, up["uploadUrl"]]
    assert requests.put(up["uploadUrl"], data=gzip.compress(instance()), headers={
        "Content-Type": "application/dicom", "Content-Encoding": "gzip"}).status_code == 200
    assert requests.put(up["uploadUrl"] + "0", data=b"x").status_code < 500
    session, csrf = _log_in(node)
    secrets_sent += [session.cookies["litevna-session"], csrf]
    assert session.get(f"{node.url}/image-stores").status_code == 200
    marker = f"/log-marker-{uuid.uuid4().hex}"
    requests.get(node.url + marker)
    log = _wait_for_line(node, marker)
    for secret in secrets_sent:
        assert secret not in log
    assert "_auth_token" not in log and "signature=" not in log
    assert "key_" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    if log_format == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"time", "level", "namespace", "message"} <= set(r) for r in records)
        access = [r for r in records if r["namespace"] == "litevna.access"
                  and r["user_agent"] == agent]
        assert len(access) == 18
        assert {(r["method"], r["path"], r["query"], r["protocol"], r["status"])
                for r in access} == {
            ("GET", f"/{LABEL}/dicomweb/studies", query, "HTTP/1.1", status)
            for query in ("", "?limit=1") for status in (200, 401)}
        assert all(isinstance(r["bytes"], int) and r["duration_ms"] >= 0 for r in access)
    else:
        access = [line for line in lines if agent in line]
        assert len(access) == 18
        assert all(re.search(rf'"GET /{LABEL}/dicomweb/studies(\?limit=1)? HTTP/1.1" '
                             r'(200|401) \d+ [\d.]+ms "metrics-test/', line) for line in access)


def test_workers_report_the_sum_of_all_of_them(tmp_path):
    with LiveServer(tmp_path / "data", "--workers", "2") as server:
        supervisor = psutil.Process(server.process.pid)
        deadline = time.monotonic() + 20
        while len(supervisor.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = supervisor.children()
        folder = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
        assert os.path.isdir(folder) and not folder.startswith(str(tmp_path))
        pids, sent = set(), 0
        while (len(pids) < 2 or sent < 40) and sent < 2000:
            pids.add(requests.get(server.url + "/healthz").json()["pid"])
            sent += 1
        assert pids == {w.pid for w in workers}
        totals = {counted(scrape(server), "health", "GET", 200) for _ in range(10)}
        assert len(totals) == 1 and totals.pop() >= sent  # whichever worker answered
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            live = [c for c in supervisor.children() if c.status() != psutil.STATUS_ZOMBIE]
            if len(live) == 2 and workers[0].pid not in {c.pid for c in live}:
                break
            time.sleep(0.1)
        # The killed worker's counts still count.
        assert counted(scrape(server), "health", "GET", 200) >= sent
        assert value(scrape(server), "litevna_requests_in_flight") == 1  # the scrape itself
    assert not os.path.exists(folder)
