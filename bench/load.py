"""STOW-RS load generator: streamed multipart POSTs over C keep-alive connections."""
from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def stow(url: str, headers: dict[str, str], bodies: Sequence[Body], concurrency: int = 1,
         timeout: float = 3600) -> Result:
    """POST every body to `url` using `concurrency` keep-alive connections; raise on any failure."""
    u = urlsplit(url)
    todo: queue.SimpleQueue[Body] = queue.SimpleQueue()
    for b in bodies:
        todo.put(b)
    errors: list[BaseException] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            while not errors:
                try:
                    body = todo.get_nowait()
                except queue.Empty:
                    return
                _post(conn, u.path, headers, body)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(bodies)))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise StowError(f"STOW to {url} failed: {errors[0]!r}") from errors[0]
    return Result(elapsed, sum(b.instances for b in bodies), sum(b.length for b in bodies), len(bodies))
