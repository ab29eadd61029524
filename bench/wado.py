"""WADO-RS benchmark: series metadata, frames and instance retrieve, LiteVNA vs Orthanc (and nginx).

Loads the same data into both servers (a 300-instance 512x512 CT series and a 100-frame
512x512 instance), then measures, each server in turn on the same machine:

* series metadata of the 300-instance series: p50 of 40 sequential requests, gzip off and on;
* frame retrieval with wrk, 8 connections, 2 threads: single frames cycling through the
  100-frame instance, and frame 1 cycling through the 300 CT instances (req/s, p50, p99);
* full instance retrieve MB/s (wrk, 8 connections) against nginx serving the same files.

    python bench/wado.py [--seconds 10]
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def wado_root(server: harness.Server) -> str:
    if isinstance(server, harness.LiteVNA):
        return f"/{server.label}/dicomweb"
    return "/dicom-web"


def latency_p50(url: str, headers: dict[str, str], count: int = 40) -> tuple[float, int]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    samples, size = [], 0
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", parts.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        samples.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
        size = len(body)
    conn.close()
    return statistics.median(samples), size


def run_server(name: str, ct_files: list[Path], multiframe: Path, seconds: int) -> dict:
    with harness.SERVERS[name](max_body=1 << 30) as server:
        load.stow(server.stow_url, server.headers, load.batches(ct_files, 50), 4)
        load.stow(server.stow_url, server.headers, load.batches([multiframe], 1), 1)
        root, base = wado_root(server), server.base_url
        study, series, _ = uids(ct_files[0])
        row = {"server": name}
        meta_url = f"{base}{root}/studies/{study}/series/{series}/metadata"
        for gzip in (False, True):
            headers = dict(server.headers, Accept="application/dicom+json")
            if gzip:
                headers["Accept-Encoding"] = "gzip"
            p50, size = latency_p50(meta_url, headers)
            row[f"metadata_p50_ms{'_gzip' if gzip else ''}"] = p50
            row[f"metadata_bytes{'_gzip' if gzip else ''}"] = size
        mf_study, mf_series, mf_sop = uids(multiframe)
        frame_headers = dict(server.headers, Accept=FRAME_ACCEPT)
        mf_paths = [f"{root}/studies/{mf_study}/series/{mf_series}/instances/{mf_sop}/frames/{n}"
                    for n in range(1, 101)]
        row["multiframe"] = load.wrk(base, mf_paths, frame_headers, seconds)
        ct_paths = []
        for path in ct_files:
            s, se, sop = uids(path)
            ct_paths.append(f"{root}/studies/{s}/series/{se}/instances/{sop}")
        row["ct_frame"] = load.wrk(base, [p + "/frames/1" for p in ct_paths], frame_headers, seconds)
        if name == "litevna":
            row["instance"] = load.wrk(base, ct_paths, dict(server.headers, Accept="application/dicom"),
                                  seconds)
        return row


def run_nginx(ct_files: list[Path], seconds: int) -> dict:
    port = harness.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp, "nginx.conf")
        conf.write_text(f"""
daemon off; worker_processes auto; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  server {{ listen 127.0.0.1:{port}; root {ct_files[0].parent}; }} }}
""")
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp])
        try:
            time.sleep(0.5)
            result = load.wrk(f"http://127.0.0.1:{port}", [f"/{p.name}" for p in ct_files], {}, seconds)
        finally:
            proc.terminate()
            proc.wait()
    return {"server": "nginx", "instance": result}


def markdown(rows: dict) -> str:
    lv, oc = rows.get("litevna", {}), rows.get("orthanc", {})

    def ratio(a, b, invert=False):
        if not a or not b:
            return "n/a"
        return f"{(b / a if invert else a / b):.1f}×"

    lines = ["| measure | Orthanc | LiteVNA | LiteVNA vs Orthanc |", "| --- | ---: | ---: | ---: |"]
    for key, label in (("metadata_p50_ms", "series metadata p50 (300 instances)"),
                       ("metadata_p50_ms_gzip", "series metadata p50, gzip")):
        lines.append(f"| {label} | {oc.get(key, 0):.1f} ms | {lv.get(key, 0):.1f} ms | "
                     f"{ratio(lv.get(key), oc.get(key), invert=True)} faster |")
    for key, label in (("multiframe", "frame of a 100-frame instance"), ("ct_frame", "frame of a CT instance")):
        a, b = lv.get(key, {}), oc.get(key, {})
        lines.append(f"| {label}: req/s (c=8) | {b.get('req_per_s', 0):.0f} | {a.get('req_per_s', 0):.0f} | "
                     f"{ratio(a.get('req_per_s'), b.get('req_per_s'))} |")
        lines.append(f"| {label}: p50 / p99 | {b.get('p50_ms', 0):.2f} / {b.get('p99_ms', 0):.2f} ms | "
                     f"{a.get('p50_ms', 0):.2f} / {a.get('p99_ms', 0):.2f} ms | |")
    nginx = rows.get("nginx", {}).get("instance", {})
    inst = lv.get("instance", {})
    lines.append(f"| instance retrieve MB/s (c=8) | nginx static: {nginx.get('mib_per_s', 0):.0f} | "
                 f"{inst.get('mib_per_s', 0):.0f} | vs nginx: {ratio(inst.get('mib_per_s'), nginx.get('mib_per_s'))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--servers", default="orthanc,litevna")
    parser.add_argument("--workers", type=int, default=1, help="LiteVNA --workers (default 1)")
    args = parser.parse_args()
    if args.workers > 1:
        harness.LITEVNA_ARGS[:] = ["--workers", str(args.workers)]
    print("preparing data…", file=sys.stderr)
    ct_files = data.ct_series_files(300)
    multiframe = data.multiframe_file(100)
    rows = {}
    for name in args.servers.split(","):
        print(f"running {name}…", file=sys.stderr)
        rows[name] = run_server(name, ct_files, multiframe, args.seconds)
    print("running nginx…", file=sys.stderr)
    rows["nginx"] = run_nginx(ct_files, args.seconds)
    table = markdown(rows)
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"wado-{stamp}.md").write_text(table + "\n")
    (RESULTS_DIR / f"wado-{stamp}.json").write_text(json.dumps(rows, indent=2))
    print(f"saved {RESULTS_DIR}/wado-{stamp}.{{md,json}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
