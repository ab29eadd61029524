"""Load generators: streamed STOW-RS multipart POSTs over C keep-alive connections, and wrk."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from data import content_type, multipart_body, multipart_length, part_length

REFERENCED_SOP_SEQ, FAILED_SOP_SEQ = "00081199", "00081198"


@dataclass
class Body:
    """One request body: its exact length and a factory that streams its chunks."""

    length: int
    instances: int
    chunks: Callable[[], Iterator[bytes]]
    content_type: str


def multipart(lengths: Iterable[int], parts: Callable[[], Iterable[Path | list[bytes]]]) -> Body:
    """A multipart/related body from its part lengths and a factory of its parts (called once per send)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    lengths = list(lengths)
    return Body(multipart_length(lengths, boundary), len(lengths),
                lambda: multipart_body(parts(), boundary), content_type(boundary))


def batches(parts: Sequence[Path | list[bytes]], size: int) -> list[Body]:
    """Split `parts` into multipart bodies of `size` instances each."""
    groups = [parts[i:i + size] for i in range(0, len(parts), size)]
    return [multipart(map(part_length, g), lambda g=g: g) for g in groups]


@dataclass
class Result:
    elapsed_s: float
    instances: int
    bytes: int
    requests: int

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.elapsed_s

    @property
    def mib_per_s(self) -> float:
        return self.bytes / self.elapsed_s / (1 << 20)


class StowError(RuntimeError):
    pass


def _post(conn: http.client.HTTPConnection, path: str, headers: dict[str, str], body: Body) -> None:
    conn.putrequest("POST", path, skip_accept_encoding=True)
    for name, value in {"Content-Type": body.content_type, "Content-Length": str(body.length),
                        "Accept": "application/dicom+json", **headers}.items():
        conn.putheader(name, value)
    conn.endheaders()
    sent = 0
    for chunk in body.chunks():
        conn.send(chunk)
        sent += len(chunk)
    if sent != body.length:
        raise StowError(f"body length mismatch: announced {body.length}, sent {sent}")
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status != 200:
        raise StowError(f"HTTP {resp.status} {resp.reason}: {payload[:500]!r}")
    try:
        result = json.loads(payload)
    except ValueError as e:
        raise StowError(f"response is not JSON: {payload[:200]!r}") from e
    stored = len(result.get(REFERENCED_SOP_SEQ, {}).get("Value", []))
    failed = result.get(FAILED_SOP_SEQ, {}).get("Value", [])
    if failed or stored != body.instances:
        raise StowError(f"{stored}/{body.instances} instances referenced, failures: {failed[:3]}")


def stow(url: str, headers: dict[str, str], bodies: Iterable[Body], concurrency: int = 1,
         timeout: float = 3600, progress: Callable[[Result], None] | None = None) -> Result:
    """POST every body to `url` using `concurrency` keep-alive connections; raise on any failure.

    `bodies` may be a lazy iterable: each body is taken (built) only when a connection is free.
    `progress`, if given, is called with the running totals after every response.
    """
    u = urlsplit(url)
    todo: Iterator[Body] = iter(bodies)
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = Result(0.0, 0, 0, 0)
    start = time.perf_counter()

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            while not errors:
                with lock:
                    body = next(todo, None)
                if body is None:
                    return
                _post(conn, u.path, headers, body)
                with lock:
                    done.instances += body.instances
                    done.bytes += body.length
                    done.requests += 1
                    done.elapsed_s = time.perf_counter() - start
                    if progress is not None:
                        progress(done)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)
        finally:
            conn.close()

    workers = min(concurrency, len(bodies)) if isinstance(bodies, Sized) else concurrency
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise StowError(f"STOW to {url} failed: {errors[0]!r}") from errors[0]
    return Result(elapsed, done.instances, done.bytes, done.requests)


WRK_ROTATE = """
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
"""


def wrk(base_url: str, paths: Sequence[str], headers: dict[str, str], seconds: int, threads: int = 2,
        connections: int = 8, timeout: float = 30) -> dict:
    """Run wrk for `seconds` over `connections`, each request the next of `paths` in turn.

    Returns req/s, p50/p99 (ms), MiB/s, requests and timeouts (requests slower than `timeout`
    seconds are not in wrk's latency figures, so the count is reported). Raises on non-2xx/3xx.
    """
    with tempfile.TemporaryDirectory() as tmp:
        script, listing = Path(tmp, "rotate.lua"), Path(tmp, "paths.txt")
        script.write_text(WRK_ROTATE)
        listing.write_text("\n".join(paths) + "\n")
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout:g}s",
               "--latency", "-s", str(script)]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        out = subprocess.run(cmd + [base_url], capture_output=True, text=True,
                             env=dict(os.environ, WRK_PATHS=str(listing)), check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    result = {"req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    for pct in ("50", "99"):
        found = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        scale = {"us": 1e-3, "ms": 1, "s": 1e3}[found.group(2)] if found else 0
        result[f"p{pct}_ms"] = float(found.group(1)) * scale if found else None
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1 / 2 ** 20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
    result["mib_per_s"] = float(transfer.group(1)) * scale
    timeouts = re.search(r"Socket errors:.*timeout (\d+)", out)
    result["timeouts"] = int(timeouts.group(1)) if timeouts else 0
    return result
