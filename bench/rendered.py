"""Rendered-frame benchmark over HTTP: LiteVNA (uncached and cached) vs Orthanc's DICOMweb plugin.

The same 300-instance 512×512 CT series (``data.ct_series_files(300)``: int16, rescale
-1024, window 40/400 in the data set) is loaded by STOW (batches of 50, 4 connections) into
three freshly started servers, one after the other:

* **Orthanc** + DICOMweb plugin: ``/dicom-web/studies/{s}/series/{se}/instances/{i}/frames/1/rendered``;
* **LiteVNA uncached**: ``litevna serve --cache-size 0`` (every request reads, decodes,
  windows and encodes the frame);
* **LiteVNA cached**: as shipped (in-process LRU of rendered images, half of ``--cache-size``).

For each, frame 1 of every instance is first fetched once over one connection (status 200,
the media type asked, decodes with Pillow at 512×512; also the warm-up: OS page cache, and
LiteVNA's render cache when on), then wrk (2 threads, 8 connections, ``--seconds``, a Lua
script rotating through the 300 paths) measures req/s, p50 and p99 for ``Accept:
image/jpeg`` and then ``Accept: image/png``, no query parameters (each server applies the
data set's first window). The table also gives the mean encoded size and how far each
server's image is from LiteVNA's (mean absolute grey-level difference on instance 1;
Orthanc 1.10.1 + DICOMweb 1.7 ignores the data set's window and stretches min/max).

    python bench/rendered.py [--seconds 10] [--servers orthanc,litevna] [--cases jpeg,png] [--quick]

``--servers litevna`` runs both LiteVNA configurations; ``litevna-uncached`` or
``litevna-cached`` picks one. ``--quick``: 3 s per case.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pydicom
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
INSTANCES = 300
CONFIGS = {
    "orthanc": ("orthanc", []),
    "litevna-uncached": ("litevna", ["--cache-size", "0"]),
    "litevna-cached": ("litevna", []),
}
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}
#: Issue targets: LiteVNA uncached at least this many times Orthanc's renders/s.
TARGET_RATIO = 2.0


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def rendered_paths(server: harness.Server, files: list[Path]) -> list[str]:
    root = server.dicomweb_root
    return [f"{root}/studies/{s}/series/{se}/instances/{i}/frames/1/rendered"
            for s, se, i in map(uids, files)]


def check_pass(base_url: str, paths: list[str], headers: dict[str, str], media_type: str) -> dict:
    """Fetch every path once over one connection; checks each answer; returns sizes and image 1."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    sizes, first = [], None
    start = time.perf_counter()
    try:
        for n, path in enumerate(paths):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
            if response.status != 200 or content_type != media_type:
                raise RuntimeError(f"GET {path} ({media_type}): {response.status} {content_type} "
                                   f"{body[:200]!r}")
            if n == 0 or n == len(paths) - 1:
                image = Image.open(io.BytesIO(body))
                image.load()
                if image.size != (512, 512):
                    raise RuntimeError(f"GET {path}: a {image.size} image, expected 512×512")
                if n == 0:
                    first = np.asarray(image.convert("L"), dtype=np.int16)
            sizes.append(len(body))
    finally:
        conn.close()
    return {"sequential_s": time.perf_counter() - start, "mean_bytes": sum(sizes) / len(sizes),
            "total_bytes": sum(sizes), "first_image": first}


def run_config(config: str, files: list[Path], cases: list[str], seconds: int,
               workers: int = 1) -> dict:
    kind, extra = CONFIGS[config]
    server_cls = harness.SERVERS[kind]
    extra = extra + (["--workers", str(workers)] if workers > 1 else [])
    server = server_cls(max_body=1 << 30, extra_args=extra) if kind == "litevna" else server_cls()
    with server:
        started = time.perf_counter()
        load.stow(server.stow_url, server.headers, load.batches(files, 50), 4)
        row = {"server": config, "load_s": time.perf_counter() - started,
               "command": " ".join(server.cmd[1:] if kind == "litevna" else server.cmd[:1])}
        if kind == "orthanc":
            row["server_info"] = {k: server.info.get(k) for k in ("Version", "dicomweb_plugin")}
        paths = rendered_paths(server, files)
        for case in cases:
            headers = dict(server.headers, Accept=MEDIA[case])
            print(f"  {config} {case}: check pass over {len(paths)} paths…", file=sys.stderr)
            checked = check_pass(server.base_url, paths, headers, MEDIA[case])
            print(f"  {config} {case}: wrk {seconds} s…", file=sys.stderr)
            result = load.wrk(server.base_url, paths, headers, seconds)
            result.update(checked)
            row[case] = result
        return row


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "n/a"


def markdown(rows: dict, cases: list[str]) -> str:
    names = [c for c in CONFIGS if c in rows]
    heads = {"orthanc": "Orthanc", "litevna-uncached": "LiteVNA uncached (`--cache-size 0`)",
             "litevna-cached": "LiteVNA cached (default)"}
    lines = ["| measure | " + " | ".join(heads[n] for n in names)
             + " | uncached vs Orthanc | cached vs Orthanc |",
             "| --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: |"]
    for case in cases:
        cells = {n: rows[n].get(case, {}) for n in names}
        orthanc = cells.get("orthanc", {}).get("req_per_s")
        uncached = cells.get("litevna-uncached", {}).get("req_per_s")
        cached = cells.get("litevna-cached", {}).get("req_per_s")
        target = ""
        if orthanc and uncached:
            target = " ✓" if uncached >= TARGET_RATIO * orthanc else f" ✗ (target ≥ {TARGET_RATIO:g}×)"
        lines.append(f"| {case.upper()} renders/s (c=8) | "
                     + " | ".join(f"{cells[n].get('req_per_s', 0):.0f}" for n in names)
                     + f" | {_ratio(uncached, orthanc)}{target} | {_ratio(cached, orthanc)} |")
        lines.append("| … p50 / p99 | "
                     + " | ".join(f"{cells[n].get('p50_ms') or 0:.1f} / {cells[n].get('p99_ms') or 0:.1f} ms"
                                  for n in names) + " | | |")
        lines.append("| … mean image size | "
                     + " | ".join(f"{cells[n].get('mean_bytes', 0) / 1024:.0f} KiB" for n in names)
                     + " | | |")
        lines.append("| … one sequential pass, 300 frames | "
                     + " | ".join(f"{cells[n].get('sequential_s', 0):.2f} s" for n in names)
                     + " | | |")
        if any("grey_diff_to_litevna" in cells[n] for n in names):
            lines.append("| … mean abs. grey diff to LiteVNA uncached, instance 1 | " + " | ".join(
                "n/a" if cells[n].get("grey_diff_to_litevna") is None
                else f"{cells[n]['grey_diff_to_litevna']:.2f}" for n in names) + " | | |")
    return "\n".join(lines)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per case (default 10)")
    parser.add_argument("--servers", default="orthanc,litevna",
                        help="comma list of: orthanc, litevna (both configurations), "
                             "litevna-uncached, litevna-cached")
    parser.add_argument("--cases", default="jpeg,png", help="comma list of: jpeg, png")
    parser.add_argument("--quick", action="store_true", help="3 s per case")
    parser.add_argument("--workers", type=int, default=1, help="LiteVNA --workers (default 1)")
    args = parser.parse_args(argv)
    seconds = 3 if args.quick else args.seconds
    configs = []
    for name in args.servers.split(","):
        for config in (["litevna-uncached", "litevna-cached"] if name == "litevna" else [name]):
            if config not in CONFIGS:
                parser.error(f"unknown server {name!r}")
            configs.append(config)
    cases = [c for c in args.cases.split(",") if c]
    if not set(cases) <= set(MEDIA):
        parser.error(f"unknown case in {args.cases!r}")
    print("preparing data…", file=sys.stderr)
    files = data.ct_series_files(INSTANCES)
    rows = {}
    for config in configs:
        print(f"running {config}…", file=sys.stderr)
        rows[config] = run_config(config, files, cases, seconds, args.workers)
    for case in cases:
        reference = rows.get("litevna-uncached", rows.get("litevna-cached", {})).get(case, {}).get("first_image")
        for row in rows.values():
            other = row.get(case, {}).pop("first_image", None)
            if reference is not None and other is not None and other.shape == reference.shape:
                row[case]["grey_diff_to_litevna"] = float(np.abs(other - reference).mean())
    table = markdown(rows, cases)
    if args.workers > 1:
        table = f"LiteVNA with --workers {args.workers}.\n\n" + table
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"benchmark": "rendered", "timestamp": stamp, "seconds": seconds, "instances": INSTANCES,
            "connections": 8, "threads": 2, "git_commit": git_commit(), "python": sys.version,
            "platform": platform.platform(), "cpus": os.cpu_count(), "rows": rows}
    (RESULTS_DIR / f"rendered-{stamp}.md").write_text(table + "\n")
    (RESULTS_DIR / f"rendered-{stamp}.json").write_text(json.dumps(meta, indent=2))
    print(f"saved {RESULTS_DIR}/rendered-{stamp}.{{md,json}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
