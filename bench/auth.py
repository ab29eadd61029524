"""Authentication cost: what every request pays to be judged (issue: < 50 µs, warm cache).

* **in process**: ``request_token`` (the five methods, on real ``twisted.web`` requests)
  followed by ``Guard.authenticate`` (signature cache, key row, revocation list, store,
  permission) for an API key, a derived token and a scoped token, with the index-backed
  revocation list and with the Redis one (a private ``redis-server`` on a free port, the
  subscription live). µs per call: the median of 7 runs of N calls each, warm. "cold" is
  the first sight of a value: the Ed25519 signature check.
* **over HTTP**: a cached ``GET /{label}/dicomweb/studies?limit=1`` with wrk, once per
  method, against one server: the difference between methods is their parsing.

    python bench/auth.py [--quick] [--no-http]

Orthanc has no comparable per-request token check (its authorization plug-in calls out to a
web service), so no peer column here.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import LiteVNA, free_port, http_request  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def fake_request(method, token):
    """A real twisted.web Request carrying token the way method does."""
    from twisted.web.server import Request
    from twisted.web.test.requesthelper import DummyChannel

    request = Request(DummyChannel())
    request.path_token = request.query_token = None
    if method == "bearer":
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + token.encode()])
    elif method == "basic":
        basic = base64.b64encode(b"litevna:" + token.encode())
        request.requestHeaders.setRawHeaders(b"authorization", [b"Basic " + basic])
    elif method == "path":
        request.path_token = token
    elif method == "cookie":
        request.requestHeaders.setRawHeaders(b"cookie", [b"other=1; litevna-token=" + token.encode()])
        request.parseCookies()  # as requestReceived() does
    elif method == "query":
        request.query_token = token.encode()
    return request


def per_call_us(fn, calls):
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def setup(folder, revocations_factory=None):
    """An index with a store, a key, a token and a scoped token; the Guard over it."""
    from litevna.accounts import Accounts
    from litevna.auth.guard import Guard
    from litevna.auth.keys import Keyring
    from litevna.auth.revocation import IndexRevocations
    from litevna.auth.tokens import Tokens
    from litevna.index.sqlite import SqliteIndex

    index = SqliteIndex(os.path.join(folder, "index.sqlite3"))
    index.migrate()
    keyring = Keyring(os.path.join(folder, "keys"))
    revocations = IndexRevocations(index, time.time)
    if revocations_factory is not None:
        revocations = revocations_factory(index, revocations)
    accounts = Accounts(index, keyring, time.time, revocations)
    if index.account_by_email("b@example.org") is None:
        accounts.create_account("b@example.org", "benchmark password")
        accounts.create_store("bench", "b@example.org")
    guard = Guard(keyring, index.api_key, index.store_by_label, time.time, revocations)
    tokens = Tokens(keyring, guard, index, revocations, time.time)
    key = accounts.create_api_key("bench")["value"]
    values = {
        "api key": key,
        "token": tokens.create("bench", key, 3600)["token"],
        "scoped token": tokens.create("bench", key, 3600,
                                      {"study_ids": ["1.2.3"], "patient_ids": ["P1"]})["token"],
    }
    return guard, tokens, values, revocations


def measure_guard(guard, values, calls):
    from litevna.auth.credentials import request_token

    rows = []
    for kind, value in values.items():
        for method in ("bearer", "basic", "path", "cookie", "query"):
            request = fake_request(method, value)

            def judged():
                guard.authenticate(request_token(request), "bench", "read")

            rows.append({"value": kind, "method": method, "us": per_call_us(judged, calls)})
    return rows


def measure_cold(tokens, guard, values, calls):
    """µs to judge a value never seen before (one signature check each)."""
    key = values["api key"]
    fresh = [tokens.create("bench", key, 3600)["token"] for _ in range(calls)]
    start = time.perf_counter()
    for value in fresh:
        guard.authenticate(value, "bench", "read")
    return (time.perf_counter() - start) / calls * 1e6


def in_process(calls):
    folder = tempfile.mkdtemp(prefix="litevna-auth-")
    try:
        guard, tokens, values, _ = setup(folder)
        rows = [dict(r, revocations="index") for r in measure_guard(guard, values, calls)]
        cold = measure_cold(tokens, guard, values, max(200, calls // 50))
        rows += [dict(r, revocations="redis") for r in with_redis(folder, calls)]
        return rows, cold
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def with_redis(folder, calls):
    """The same guard with the Redis revocation list, its subscription live."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: skipping the Redis rows", file=sys.stderr)
        return []
    from twisted.internet import reactor, task

    from litevna.auth.redisrevocation import RedisRevocations

    port = free_port()
    redis = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    out = []

    def run():
        def redis_list(index, fallback):
            return RedisRevocations(reactor, f"redis://127.0.0.1:{port}/0", fallback, index,
                                    time.time)

        guard, _, values, revocations = setup(folder, redis_list)
        revocations.start()

        def ready():
            if not revocations.live:
                return task.deferLater(reactor, 0.05, ready)
            out.extend(measure_guard(guard, values, calls))
            return revocations.stop()

        return task.deferLater(reactor, 0.05, ready)

    try:
        task.react(lambda _: run(), [])
    except SystemExit:
        pass
    finally:
        redis.terminate()
        redis.wait()
    return out


def over_http(seconds):
    from load import wrk

    rows = []
    with LiteVNA() as server:
        key = server.headers["Authorization"].split(" ", 1)[1]
        root = server.dicomweb_root
        http_request("GET", f"{server.base_url}{root}/studies?limit=1", server.headers)
        cases = {
            "bearer": ({"Authorization": f"Bearer {key}"}, f"{root}/studies?limit=1"),
            "basic": ({"Authorization": "Basic " + base64.b64encode(
                f"litevna:{key}".encode()).decode()}, f"{root}/studies?limit=1"),
            "path": ({}, f"/{server.label}/key_{key}/dicomweb/studies?limit=1"),
            "cookie": ({"Cookie": f"litevna-token={key}"}, f"{root}/studies?limit=1"),
            "query": ({}, f"{root}/studies?limit=1&_auth_token={key}"),
        }
        for method, (headers, path) in cases.items():
            result = wrk(server.base_url, [path], headers, seconds)
            rows.append({"method": method, **result})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--servers", help="ignored (run_all.py passes it)")
    parser.add_argument("--workers", help="ignored")
    args = parser.parse_args()
    calls = 2000 if args.quick else 20000
    rows, cold = in_process(calls)
    lines = ["| value | method | revocations | µs per request (warm) |", "|---|---|---|---:|"]
    lines += [f"| {r['value']} | {r['method']} | {r['revocations']} | {r['us']:.1f} |" for r in rows]
    lines.append(f"\nCold (first sight, Ed25519 verify + lookups): {cold:.0f} µs")
    http_rows = [] if args.no_http else over_http(3 if args.quick else 8)
    if http_rows:
        lines += ["", "| method | req/s (cached QIDO, c=8) | p99 ms |", "|---|---:|---:|"]
        lines += [f"| {r['method']} | {r['req_per_s']:.0f} | {r['p99_ms']:.1f} |" for r in http_rows]
    table = "\n".join(lines)
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"auth-{stamp}.md").write_text(table + "\n")
    (RESULTS_DIR / f"auth-{stamp}.json").write_text(json.dumps(
        {"machine": platform.node(), "in_process": rows, "cold_us": cold, "http": http_rows},
        indent=2))


if __name__ == "__main__":
    main()
