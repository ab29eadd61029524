"""STOW-RS benchmark: Orthanc vs LiteVNA, a fresh server per case.

Case A: a 512x512 CT series POSTed in batches of 50 instances over 4 connections.
Case B: one ~1 GiB multipart request over one connection.

    python bench/stow.py [--quick] [--servers orthanc,litevna]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GiB, MiB = 1 << 30, 1 << 20


class Case:
    def __init__(self, key: str, title: str, concurrency: int) -> None:
        self.key, self.title, self.concurrency = key, title, concurrency

    def bodies(self) -> list[load.Body]:
        raise NotImplementedError


class SeriesCase(Case):
    def __init__(self, instances: int, batch: int, concurrency: int) -> None:
        super().__init__("A", f"A: {instances}-instance CT series, batches of {batch}, {concurrency} conns",
                         concurrency)
        self.files = data.ct_series_files(instances)  # generated (once) before anything is timed
        self.batch = batch

    def bodies(self) -> list[load.Body]:
        return load.batches(self.files, self.batch)


class BigRequestCase(Case):
    def __init__(self, total_bytes: int) -> None:
        self.study = data.SyntheticStudy.of_size(total_bytes)
        size = self.study.count * self.study.part_size
        super().__init__("B", f"B: one {size / MiB:.0f} MiB request ({self.study.count} instances), 1 conn", 1)

    def bodies(self) -> list[load.Body]:
        return [load.multipart(self.study.lengths(), self.study.parts)]


def run_case(case: Case, name: str) -> dict:
    bodies = case.bodies()
    row = {"case": case.key, "title": case.title, "server": name}
    try:
        with harness.SERVERS[name](max_body=max(b.length for b in bodies)) as server:
            row["server_info"] = {k: server.info[k] for k in ("Version", "dicomweb_plugin") if k in server.info}
            with harness.PeakRss(server.pid) as rss:
                result = load.stow(server.stow_url, server.headers, bodies, case.concurrency)
        row.update(elapsed_s=result.elapsed_s, instances=result.instances, bytes=result.bytes,
                   requests=result.requests, instances_per_s=result.instances_per_s,
                   mib_per_s=result.mib_per_s, peak_rss_mib=rss.peak_mib,
                   vm_hwm_mib=rss.hwm / MiB, sampled_rss_max_mib=rss.sampled_max / MiB)
    except (harness.ServerUnavailable, load.StowError) as e:
        row["error"] = str(e)
        print(f"!! {name} / case {case.key}: {e}", file=sys.stderr)
    return row


def ratio(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key]:.2f}×" if key in a and key in b and b[key] else "n/a"


def markdown(rows: list[dict]) -> str:
    out = ["| case | server | instances | MiB sent | wall s | instances/s | MiB/s | peak RSS MiB |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            error = r["error"].splitlines()[0][:160].replace("|", "\\|")
            out.append(f"| {r['title']} | {r['server']} | failed: {error} | | | | | |")
        else:
            out.append(f"| {r['title']} | {r['server']} | {r['instances']} | {r['bytes'] / MiB:.0f} | "
                       f"{r['elapsed_s']:.2f} | {r['instances_per_s']:.1f} | {r['mib_per_s']:.1f} | "
                       f"{r['peak_rss_mib']:.0f} |")
    for key in dict.fromkeys(r["case"] for r in rows):
        by = {r["server"]: r for r in rows if r["case"] == key}
        if "litevna" in by and "orthanc" in by:
            lv, oc = by["litevna"], by["orthanc"]
            out.append(f"| {key}: ratio | LiteVNA/Orthanc | | | | {ratio(lv, oc, 'instances_per_s')} | "
                       f"{ratio(lv, oc, 'mib_per_s')} | {ratio(lv, oc, 'peak_rss_mib')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 60 instances / 64 MiB")
    p.add_argument("--servers", default="orthanc,litevna", help="comma list of: orthanc, litevna")
    p.add_argument("--workers", type=int, default=1, help="LiteVNA --workers (default 1)")
    p.add_argument("--cases", default="A,B", help="comma list of: A, B")
    args = p.parse_args(argv)
    if args.workers > 1:
        harness.LITEVNA_ARGS[:] = ["--workers", str(args.workers)]
    servers = args.servers.split(",")
    if unknown := set(servers) - set(harness.SERVERS):
        p.error(f"unknown servers: {unknown}")

    print("preparing data…", file=sys.stderr)
    cases = [c for c in (SeriesCase(60 if args.quick else 300, 50, 4),
                         BigRequestCase(64 * MiB if args.quick else GiB))
             if c.key in args.cases.split(",")]

    rows = []
    for case in cases:
        for name in servers:
            print(f"running {case.title} on {name}…", file=sys.stderr)
            rows.append(run_case(case, name))

    table = markdown(rows)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    meta = {"benchmark": "stow", "timestamp": stamp, "quick": args.quick, "python": sys.version,
            "platform": platform.platform(), "cpus": os.cpu_count(), "rows": rows}
    (RESULTS_DIR / f"stow-{stamp}.md").write_text(f"# STOW-RS benchmark {stamp}{' (quick)' * args.quick}\n\n{table}")
    (RESULTS_DIR / f"stow-{stamp}.json").write_text(json.dumps(meta, indent=2))
    print(f"saved {RESULTS_DIR / f'stow-{stamp}'}.{{md,json}}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
