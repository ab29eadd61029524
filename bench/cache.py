"""Shared Redis cache vs in-process caches, on two LiteVNA nodes sharing one data dir.

The 300-instance 512×512 CT series (``data.ct_series_files(300)``) is stored through node A,
which then builds every answer once: frame 1 of each instance rendered as JPEG, each
instance's metadata, one search per instance. Node B (same data dir and index, same
``--public-url``, as behind one load balancer) is then asked for the same answers, each once,
over 8 connections — what a second node or worker costs for work another already did:

* **in-process** caches (the default): B builds every answer again;
* **Redis** (``--redis``, a private ``redis-server`` on a free port): B gets A's answers.

Then wrk (8 connections, rotating through the same paths) measures B's steady state, when
every answer is in B's own memory either way.

    python bench/cache.py [--seconds 8]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PUBLIC = "https://pacs.example.org"


def _get(base: str, path: str, headers: dict) -> None:
    status, body = harness.http_request("GET", base + path, headers, timeout=60)
    if status != 200 or not body:
        raise RuntimeError(f"GET {path}: {status}")


def _once(base: str, paths: list[tuple[str, str]], headers: dict) -> float:
    """Requests/s of fetching every path once over 8 connections."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: _get(base, p[0], {**headers, "Accept": p[1]}), paths))
    return len(paths) / (time.perf_counter() - start)


def _paths(server: harness.LiteVNA, files: list[Path]) -> dict[str, list[tuple[str, str]]]:
    root = server.dicomweb_root
    found = json.loads(harness.http_request(
        "GET", f"{server.base_url}{root}/instances?limit=1000&includefield=0020000E",
        server.headers)[1])
    rendered, metadata, search = [], [], []
    for item in found:
        study, series = item["0020000D"]["Value"][0], item["0020000E"]["Value"][0]
        sop = item["00080018"]["Value"][0]
        instance = f"{root}/studies/{study}/series/{series}/instances/{sop}"
        rendered.append((instance + "/frames/1/rendered", "image/jpeg"))
        metadata.append((instance + "/metadata", "application/dicom+json"))
        search.append((f"{root}/instances?SOPInstanceUID={sop}", "application/dicom+json"))
    return {"rendered JPEG": rendered, "metadata": metadata, "search": search}


def run(mode: str, files: list[Path], seconds: int, redis_url: str | None) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-cache-{mode}-"))
    extra = ["--public-url", PUBLIC] + (["--redis", redis_url] if redis_url else [])
    rows = []
    try:
        with harness.LiteVNA(extra_args=extra, workdir=workdir) as first:
            load.stow(first.stow_url, first.headers, load.batches(files, 50), 4)
            with harness.LiteVNA(extra_args=extra, workdir=workdir) as second:
                kinds = _paths(first, files)
                for kind, paths in kinds.items():
                    _once(first.base_url, paths, first.headers)  # A builds
                    cold = _once(second.base_url, paths, second.headers)
                    warm = load.wrk(second.base_url, [p for p, _ in paths],
                                    {**second.headers, "Accept": paths[0][1]}, seconds)
                    rows.append({"mode": mode, "kind": kind, "b_first_pass_per_s": cold,
                                 "b_steady_per_s": warm["req_per_s"],
                                 "b_steady_p99_ms": warm["p99_ms"]})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--servers", help="ignored (run_all.py passes it)")
    parser.add_argument("--workers", help="ignored")
    args = parser.parse_args()
    files = data.ct_series_files(60 if args.quick else 300)
    seconds = 3 if args.quick else args.seconds
    rows = run("in-process", files, seconds, None)
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: no Redis rows", file=sys.stderr)
    else:
        port = harness.free_port()
        redis = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            rows += run("Redis", files, seconds, f"redis://127.0.0.1:{port}/0")
        finally:
            redis.terminate()
            redis.wait()
    lines = ["| answer | caches | node B, first pass (req/s, c=8) | node B, steady (req/s) | p99 ms |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['mode']} | {r['b_first_pass_per_s']:.0f} | "
              f"{r['b_steady_per_s']:.0f} | {r['b_steady_p99_ms']:.1f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"cache-{stamp}.md").write_text(table + "\n")
    (RESULTS_DIR / f"cache-{stamp}.json").write_text(json.dumps(
        {"machine": platform.node(), "instances": len(files), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
