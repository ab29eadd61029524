"""Presigned upload of a 1 GiB study (issue: server RSS < 150 MB, time within 1.5× of gzip -d).

The study is one multipart/related body of 512×512 CT instances (``data.SyntheticStudy``),
gzip-compressed once with GNU gzip at its default level, as the client's document does
(``gzip -c``). Timed, on this machine, in one run:

* **gzip -d**: ``gzip -dc study.gz > file`` — the floor the issue compares with;
* **LiteVNA**: step 1 (upload-url), step 2 (PUT of the .gz, streamed from disk), step 3
  (POST ?uploadId=, which stores every instance) on a fresh server; wall time of the three
  and of each, and the server's peak RSS;
* **Orthanc** has no presigned flow: its direct STOW of the same, uncompressed body is shown
  beside it for scale.

    python bench/upload.py [--quick] [--servers litevna,orthanc]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache" / "upload"
GiB, MiB = 1 << 30, 1 << 20
BOUNDARY = "litevna-bench-upload"


def study_files(total: int) -> tuple[Path, Path, int]:
    """(multipart body, its .gz, instance count), generated once into bench/.cache/upload."""
    study = data.SyntheticStudy.of_size(total)
    CACHE.mkdir(parents=True, exist_ok=True)
    body = CACHE / f"study-{study.count}.multipart"
    packed = body.with_suffix(".multipart.gz")
    if not packed.exists():
        tmp = body.with_suffix(".tmp")
        with tmp.open("wb") as fp:
            for chunk in data.multipart_body(study.parts(), BOUNDARY):
                fp.write(chunk)
        tmp.rename(body)
        with packed.with_suffix(".tmp").open("wb") as out:
            subprocess.run(["gzip", "-c", str(body)], stdout=out, check=True)
        packed.with_suffix(".tmp").rename(packed)
    return body, packed, study.count


def gunzip_seconds(packed: Path) -> float:
    """Best of two ``gzip -dc`` runs into a file (the page cache warm for both)."""
    best = float("inf")
    out = CACHE / "gunzip.out"
    for _ in range(2):
        start = time.perf_counter()
        with out.open("wb") as fp:
            subprocess.run(["gzip", "-dc", str(packed)], stdout=fp, check=True)
        best = min(best, time.perf_counter() - start)
    out.unlink()
    return best


def _request(method: str, url: str, headers: dict, body=None, length: int | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3600)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.putrequest(method, target)
    for name, value in headers.items():
        conn.putheader(name, value)
    if length is not None:
        conn.putheader("Content-Length", str(length))
    conn.endheaders()
    if body is not None:
        while True:
            chunk = body.read(1 << 20)
            if not chunk:
                break
            conn.send(chunk)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {parts.path}: {response.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None


def litevna_upload(packed: Path, count: int) -> dict:
    with harness.LiteVNA() as server:
        root = f"{server.base_url}{server.dicomweb_root}"
        with harness.PeakRss(server.pid) as rss:
            start = time.perf_counter()
            issued = _request("POST", f"{root}/studies/upload-url", server.headers)
            t1 = time.perf_counter()
            with packed.open("rb") as fp:
                _request("PUT", issued["uploadUrl"], {
                    "Content-Type": data.content_type(BOUNDARY), "Content-Encoding": "gzip"},
                    fp, packed.stat().st_size)
            t2 = time.perf_counter()
            result = _request("POST", f"{root}/studies?uploadId={issued['uploadId']}",
                              server.headers)
            t3 = time.perf_counter()
        stored = len(result.get("00081199", {}).get("Value", []))
        if stored != count or "00081198" in result:
            raise RuntimeError(f"stored {stored} of {count}: {str(result)[:300]}")
        return {"server": "litevna", "seconds": t3 - start, "put_s": t2 - t1,
                "process_s": t3 - t2, "instances": stored, "peak_rss_mib": rss.peak_mib}


def orthanc_stow(body: Path, count: int) -> dict:
    size = body.stat().st_size
    with harness.Orthanc(max_body=size) as server:
        with harness.PeakRss(server.pid) as rss:
            start = time.perf_counter()
            with body.open("rb") as fp:
                _request("POST", server.stow_url, {**server.headers,
                                                   "Content-Type": data.content_type(BOUNDARY)},
                         fp, size)
            seconds = time.perf_counter() - start
    return {"server": "orthanc (direct STOW, uncompressed)", "seconds": seconds,
            "instances": count, "peak_rss_mib": rss.peak_mib}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB instead of 1 GiB")
    parser.add_argument("--servers", default="litevna,orthanc")
    parser.add_argument("--workers", help="ignored")
    args = parser.parse_args()
    body, packed, count = study_files(128 * MiB if args.quick else GiB)
    size, packed_size = body.stat().st_size, packed.stat().st_size
    gunzip = gunzip_seconds(packed)
    rows = []
    servers = args.servers.split(",")
    if "litevna" in servers:
        rows.append(litevna_upload(packed, count))
    if "orthanc" in servers:
        try:
            rows.append(orthanc_stow(body, count))
        except harness.ServerUnavailable as exc:
            print(f"!! orthanc: {exc}", file=sys.stderr)
    lines = [f"Study: {count} instances, {size / MiB:.0f} MiB, gzip -6 → {packed_size / MiB:.0f} MiB. "
             f"`gzip -dc` into a file: {gunzip:.2f} s ({size / MiB / gunzip:.0f} MiB/s).", "",
             "| server | wall s | × gzip -d | PUT s | process s | MiB/s | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['seconds']:.2f} | {r['seconds'] / gunzip:.2f} | "
                     f"{r.get('put_s', 0):.2f} | {r.get('process_s', 0):.2f} | "
                     f"{size / MiB / r['seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
    table = "\n".join(lines)
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"upload-{stamp}.md").write_text(table + "\n")
    (RESULTS_DIR / f"upload-{stamp}.json").write_text(json.dumps(
        {"machine": platform.node(), "bytes": size, "gz_bytes": packed_size,
         "gunzip_s": gunzip, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
