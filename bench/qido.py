"""QIDO-RS benchmark: study searches on a large synthetic archive, LiteVNA vs Orthanc.

The archive (``data.QidoArchive``): N studies × 3 series × 10 tiny CT instances (default
10 000 studies, 300 000 instances), ~0.3 patients per study, names, dates, accession numbers,
modalities and descriptions from a seeded generator. Each server is loaded ONCE, with STOW
multipart batches, into a persistent directory under ``bench/.cache/qido/`` keyed by the data
parameters and CACHE_VERSION; a ``COMPLETE`` marker (with the load time) is written only when
the load finished, so an interrupted load starts over and a finished one is reused.

Then, each server alone in turn, four ``/studies`` searches (wrk, 8 connections, a Lua script
rotating through many paths):

* (a) ``PatientID=<id>&limit=100``, over many patient IDs;
* (b) ``PatientName=<ABC>*&limit=100``, over family-name prefixes hitting ~1–3 % of studies;
* (c) ``StudyDate=<first>-<last>&limit=100``, over the 120 months of the ten years;
* (d) OHIF's study list: ``limit=101&offset=0&fuzzymatching=false&includefield=00081030,
  00080060,00080090,00100030&PatientName=*<abc>*``, over infixes.

Before timing, every path is asked once on each server and its result count compared with
the count the generator expects and with the other server (warnings printed); for a sample of
paths the full match set (limit 10000) is compared UID by UID.

LiteVNA is measured as shipped (its search cache then answers the repeated paths) and with
``--cache-size 0`` (every request searches); Orthanc has no such cache.

    python bench/qido.py [--studies 10000] [--instances-per-study 30] [--seconds 10]
                         [--servers orthanc,litevna] [--litevna-cache both|on|off]
                         [--quick] [--load-only] [--reload orthanc,litevna]
"""
from __future__ import annotations

import argparse
import calendar
import hashlib
import http.client
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
import harness  # noqa: E402
import load  # noqa: E402
import psutil  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STORE_ROOT = data.CACHE_DIR / "qido"
CACHE_VERSION = "1"  # bump when the archive's bytes or the way it is loaded change
ACCEPT = {"Accept": "application/dicom+json"}
STUDY_UID = "0020000D"
FULL_LIMIT = 10000  # LiteVNA's maximum (its default is 100); Orthanc has no cap by default
OHIF_FIELDS = "00081030,00080060,00080090,00100030"
# Files whose change can make a LiteVNA store loaded earlier differ from a fresh load.
LITEVNA_INGEST_FILES = ["litevna/index/schema/sqlite/*.sql", "litevna/dicom/ingest.py",
                        "litevna/dicom/levels.py", "litevna/index/sqlite.py"]


# --------------------------------------------------------------------------- workloads

@dataclass
class Workload:
    key: str
    title: str
    paths: list[str] = field(default_factory=list)     # under the DICOMweb root, timed as they are
    expected: list[set[str]] = field(default_factory=list)  # all matching Study UIDs per path
    limit: int = 100
    includefield: tuple[str, ...] = ()

    def add(self, params: dict[str, str], matches: set[str]) -> None:
        self.paths.append("/studies?" + urlencode(params, safe="*,"))
        self.expected.append(matches)

    def full(self, i: int) -> str:
        """Path i asking for every match (limit FULL_LIMIT)."""
        return self.paths[i].replace(f"limit={self.limit}", f"limit={FULL_LIMIT}")


def workloads(archive: data.QidoArchive, per_kind: int = 500) -> list[Workload]:
    rng = random.Random(f"{archive.seed}:queries")
    studies = archive.studies
    n = len(studies)

    by_patient: dict[str, set[str]] = {}
    for s in studies:
        by_patient.setdefault(s.patient["id"], set()).add(s.uid)
    a = Workload("a", "PatientID exact")
    for pid in rng.sample(sorted(by_patient), min(per_kind, len(by_patient))):
        a.add({"PatientID": pid, "limit": a.limit}, by_patient[pid])

    def names_with(test) -> set[str]:
        return {s.uid for s in studies if test(s.patient["name"])}

    b = Workload("b", "PatientName prefix (ABC*)")
    prefixes = sorted({f[:3] for f in data.FAMILY_NAMES})
    hits = {p: names_with(lambda name, p=p: name.startswith(p)) for p in prefixes}
    chosen = [p for p in prefixes if 0.01 <= len(hits[p]) / n <= 0.03] or [p for p in prefixes if hits[p]]
    for p in chosen:
        b.add({"PatientName": p + "*", "limit": b.limit}, hits[p])

    c = Workload("c", "StudyDate month range")
    by_month: dict[str, set[str]] = {}
    for s in studies:
        by_month.setdefault(s.date[:6], set()).add(s.uid)
    for month in sorted(by_month):
        last = calendar.monthrange(int(month[:4]), int(month[4:]))[1]
        c.add({"StudyDate": f"{month}01-{month}{last:02d}", "limit": c.limit}, by_month[month])

    d = Workload("d", "OHIF list, PatientName=*abc*", limit=101, includefield=tuple(OHIF_FIELDS.split(",")))
    infixes = sorted({f[i:i + 3] for f in data.FAMILY_NAMES for i in range(1, len(f) - 2)})
    hits = {x: names_with(lambda name, x=x: x in name) for x in infixes}
    chosen = [x for x in infixes if 0.01 <= len(hits[x]) / n <= 0.05] or [x for x in infixes if hits[x]]
    for x in rng.sample(chosen, min(30, len(chosen))):
        d.add({"limit": d.limit, "offset": 0, "fuzzymatching": "false", "includefield": OHIF_FIELDS,
               "PatientName": f"*{x}*"}, hits[x])
    return [a, b, c, d]


def probes(archive: data.QidoArchive) -> list[tuple[str, str, set[str]]]:
    """Untimed behaviour checks: (what, path, expected Study UIDs as LiteVNA's SPEC defines them)."""
    studies = archive.studies
    name = studies[0].patient["name"]
    prefix, infix = name[:3], name.split("^")[0][1:4]
    starts = {s.uid for s in studies if s.patient["name"].startswith(prefix)}
    contains = {s.uid for s in studies if infix in s.patient["name"]}
    exact = {s.uid for s in studies if s.patient["name"] == name}
    mr = {s.uid for s in studies if any(se["modality"] == "MR" for se in s.series)}
    q = lambda params: "/studies?" + urlencode({**params, "limit": FULL_LIMIT}, safe="*^,")  # noqa: E731
    return [
        ("lower-case prefix (PN is case-insensitive)", q({"PatientName": prefix.lower() + "*"}), starts),
        ("lower-case infix", q({"PatientName": f"*{infix.lower()}*"}), contains),
        ("exact PatientName, no wildcard", q({"PatientName": name}), exact),
        ("ModalitiesInStudy=MR", q({"ModalitiesInStudy": "MR"}), mr),
        ("Modality=MR at study level (OHIF)", q({"Modality": "MR"}), mr),
    ]


# --------------------------------------------------------------------------- stores

def fingerprint(patterns: list[str]) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(harness.REPO_ROOT.glob(pattern)):
            h.update(path.relative_to(harness.REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def git_head() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.REPO_ROOT,
                       capture_output=True, text=True)
    return r.stdout.strip()


def git_dirty() -> bool:
    r = subprocess.run(["git", "status", "--porcelain", "--", "litevna"], cwd=harness.REPO_ROOT,
                       capture_output=True, text=True)
    return bool(r.stdout.strip())


def store_dir(name: str, archive: data.QidoArchive) -> Path:
    return STORE_ROOT / (f"{name}-v{CACHE_VERSION}-{archive.count}x{archive.series_per_study}"
                         f"x{archive.per_series}-{archive.seed}")


def bodies(archive: data.QidoArchive, batch: int):
    for parts in archive.batches(batch):
        yield load.multipart(map(len, parts), lambda parts=parts: [[p] for p in parts])


def disk_usage(path: Path) -> int:
    r = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 else 0


def ensure_loaded(name: str, archive: data.QidoArchive, batch: int, concurrency: int, reload: bool) -> dict:
    """The load record of `name`'s store, loading it first when it is missing or incomplete."""
    directory = store_dir(name, archive)
    marker = directory / "COMPLETE"
    if marker.exists() and not reload:
        info = json.loads(marker.read_text())
        if name == "litevna" and info.get("ingest_fingerprint") != fingerprint(LITEVNA_INGEST_FILES):
            print(f"!! {name}: the store was loaded by other ingest/index code (at {info.get('git_head')}; "
                  f"{', '.join(LITEVNA_INGEST_FILES)} changed since); its migrations run on start. "
                  f"If counts look wrong, rerun with --reload {name}.", file=sys.stderr)
        print(f"{name}: reusing {directory} (loaded in {info['elapsed_s'] / 60:.1f} min)", file=sys.stderr)
        return dict(info, reused=True)
    shutil.rmtree(directory, ignore_errors=True)
    total = archive.instances
    print(f"{name}: loading {archive.count} studies / {total} instances into {directory} "
          f"(batches of {batch}, {concurrency} connections)…", file=sys.stderr)
    last = [0.0]

    def progress(done: load.Result) -> None:
        if done.elapsed_s - last[0] >= 10 or done.instances == total:
            last[0] = done.elapsed_s
            rate = done.instances / done.elapsed_s
            print(f"  {name}: {done.instances}/{total} ({100 * done.instances / total:.1f} %), "
                  f"{rate:.0f} inst/s, {done.elapsed_s / 60:.1f} min, "
                  f"ETA {(total - done.instances) / rate / 60:.1f} min", file=sys.stderr, flush=True)

    with harness.SERVERS[name](workdir=directory) as server:
        result = load.stow(server.stow_url, server.headers, bodies(archive, batch), concurrency,
                           progress=progress)
        version = {k: server.info[k] for k in ("Version", "dicomweb_plugin") if k in server.info}
    info = {"server": name, "studies": archive.count, "instances": result.instances,
            "bytes_sent": result.bytes, "requests": result.requests, "batch": batch,
            "concurrency": concurrency, "elapsed_s": result.elapsed_s,
            "instances_per_s": result.instances_per_s, "disk_bytes": disk_usage(directory),
            "loaded_at": time.strftime("%Y-%m-%d %H:%M:%S"), "git_head": git_head(),
            "server_info": version, "cache_version": CACHE_VERSION}
    if name == "litevna":
        info["ingest_fingerprint"] = fingerprint(LITEVNA_INGEST_FILES)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, marker)
    print(f"{name}: loaded {result.instances} instances in {result.elapsed_s / 60:.1f} min "
          f"({result.instances_per_s:.0f} inst/s), {info['disk_bytes'] / 2**20:.0f} MiB on disk",
          file=sys.stderr)
    return dict(info, reused=False)


# --------------------------------------------------------------------------- checks

class Client:
    """One keep-alive connection asking QIDO paths of one server."""

    def __init__(self, server: harness.Server) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)

    def get(self, path: str) -> tuple[int, list[dict] | None, float, str]:
        """(status, DICOM JSON results or None, seconds, Warning header or error text)."""
        start = time.perf_counter()
        self.conn.request("GET", self.server.dicomweb_root + path, headers=dict(self.server.headers, **ACCEPT))
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status == 204:
            return 200, [], elapsed, ""
        if resp.status != 200:
            return resp.status, None, elapsed, body[:300].decode(errors="replace")
        try:
            results = json.loads(body)
            assert isinstance(results, list) and all(isinstance(r, dict) for r in results)
        except (ValueError, AssertionError) as e:
            return resp.status, None, elapsed, f"not a DICOM JSON array: {e!r}: {body[:200]!r}"
        return 200, results, elapsed, resp.getheader("Warning") or ""


    def close(self) -> None:
        self.conn.close()


def study_uids(results: list[dict] | None) -> list[str] | None:
    return None if results is None else [(r.get(STUDY_UID, {}).get("Value") or [None])[0] for r in results]


def check(server: harness.Server, loads: list[Workload], full_sample: int,
          archive: data.QidoArchive) -> dict:
    """Ask every timed path once (also a warm-up), a sample in full, and the probes."""
    client = Client(server)
    out: dict = {"workloads": {}, "probes": []}
    try:
        for w in loads:
            rows, warnings, absent = [], [], {}
            for i, path in enumerate(w.paths):
                status, results, secs, note = client.get(path)
                uids = study_uids(results)
                for tag in w.includefield:
                    absent[tag] = absent.get(tag, 0) + sum(tag not in r for r in results or [])
                want = min(len(w.expected[i]), w.limit)
                row = {"status": status, "count": None if uids is None else len(uids), "expected": want,
                       "seconds": secs}
                if uids is None:
                    warnings.append(f"{path}: HTTP {status} {note}")
                elif len(uids) != want:
                    warnings.append(f"{path}: {len(uids)} results, expected {want}")
                elif not set(uids) <= w.expected[i]:
                    warnings.append(f"{path}: {len(set(uids) - w.expected[i])} results that do not match")
                if uids is not None and len(set(uids)) != len(uids):
                    warnings.append(f"{path}: duplicate studies in one answer")
                rows.append(row)
            for i in range(min(full_sample, len(w.paths))):
                status, results, secs, note = client.get(w.full(i))
                uids = study_uids(results)
                if uids is None:
                    warnings.append(f"{w.full(i)}: HTTP {status} {note}")
                    continue
                missing, extra = w.expected[i] - set(uids), set(uids) - w.expected[i]
                rows[i]["full_count"], rows[i]["full_expected"] = len(uids), len(w.expected[i])
                rows[i]["full_seconds"] = secs
                if missing or extra:
                    warnings.append(f"{w.full(i)}: {len(uids)} results, expected {len(w.expected[i])} "
                                    f"({len(missing)} missing, {len(extra)} not matching)")
            out["workloads"][w.key] = {"rows": rows, "warnings": warnings,
                                       "includefield_absent": {t: n for t, n in absent.items() if n}}
            ok = sum(r["status"] == 200 for r in rows)
            print(f"  {server.name} {w.key}: {ok}/{len(rows)} answered 200, "
                  f"{len(warnings)} warnings, mean {sum(r['count'] or 0 for r in rows) / len(rows):.1f} results, "
                  f"{sum(r['seconds'] for r in rows) / len(rows) * 1000:.1f} ms each", file=sys.stderr)
            for tag, n in out["workloads"][w.key]["includefield_absent"].items():
                print(f"    includefield {tag} absent from {n} results", file=sys.stderr)
            for line in warnings[:5]:
                print(f"    !! {line}", file=sys.stderr)
            if len(warnings) > 5:
                print(f"    !! … {len(warnings) - 5} more", file=sys.stderr)
        for what, path, expected in probes(archive):
            status, results, secs, note = client.get(path)
            uids = study_uids(results)
            probe = {"what": what, "path": path, "status": status, "expected": len(expected),
                     "count": None if uids is None else len(uids),
                     "exact": uids is not None and set(uids) == expected, "note": note[:200]}
            out["probes"].append(probe)
            print(f"  {server.name} probe {what}: HTTP {status}, {probe['count']} results "
                  f"(expected {len(expected)}){'' if probe['exact'] else '  <- differs'}", file=sys.stderr)
    finally:
        client.close()
    return out


def compare(checks: dict[str, dict], loads: list[Workload]) -> list[str]:
    """Paths where Orthanc and LiteVNA returned different numbers of results."""
    other = next((v for v in ("litevna", "litevna-nocache") if v in checks), None)
    if "orthanc" not in checks or other is None:
        return []
    lines = []
    for w in loads:
        a = checks["orthanc"]["workloads"][w.key]["rows"]
        b = checks[other]["workloads"][w.key]["rows"]
        diff = [i for i in range(len(w.paths)) if a[i]["count"] != b[i]["count"]]
        if diff:
            i = diff[0]
            lines.append(f"({w.key}) {len(diff)}/{len(w.paths)} paths differ, e.g. {w.paths[i]}: "
                         f"Orthanc {a[i]['count']}, LiteVNA {b[i]['count']}, generator {a[i]['expected']}")
    for pa, pb in zip(checks["orthanc"]["probes"], checks[other]["probes"]):
        if pa["count"] != pb["count"]:
            lines.append(f"probe {pa['what']}: Orthanc {pa['count']}, LiteVNA {pb['count']} "
                         f"(LiteVNA's SPEC expects {pa['expected']})")
    return lines


# --------------------------------------------------------------------------- run

#: What is measured: (server, its data store, extra constructor arguments, label).
VARIANTS = {
    "orthanc": ("orthanc", {}, "Orthanc"),
    "litevna": ("litevna", {}, "LiteVNA (as shipped: search cache on)"),
    "litevna-nocache": ("litevna", {"extra_args": ["--cache-size", "0"]}, "LiteVNA --cache-size 0"),
}


def run_variant(variant: str, archive: data.QidoArchive, loads: list[Workload], args) -> dict:
    name, kwargs, label = VARIANTS[variant]
    if name == "litevna" and args.workers > 1:
        kwargs = dict(kwargs, extra_args=kwargs.get("extra_args", []) + ["--workers", str(args.workers)])
        label += f", --workers {args.workers}"
    row: dict = {"variant": variant, "server": name, "label": label, "timed": {}}
    with harness.SERVERS[name](workdir=store_dir(name, archive), **kwargs) as server:
        row["server_info"] = {k: server.info[k] for k in ("Version", "dicomweb_plugin") if k in server.info}
        row["command"] = server.cmd
        print(f"checking {variant}…", file=sys.stderr)
        row["check"] = check(server, loads, args.full_sample, archive)
        headers = dict(server.headers, **ACCEPT)
        for w in loads:
            if any(r["status"] != 200 for r in row["check"]["workloads"][w.key]["rows"]):
                row["timed"][w.key] = {"error": "not every path answered 200; not timed"}
                continue
            print(f"timing {variant} ({w.key}) {w.title}…", file=sys.stderr)
            try:
                row["timed"][w.key] = load.wrk(server.base_url, [server.dicomweb_root + p for p in w.paths],
                                               headers, args.seconds, args.threads, args.connections)
            except (RuntimeError, subprocess.CalledProcessError) as e:
                row["timed"][w.key] = {"error": str(e)[:500]}
                print(f"!! {variant} ({w.key}): {e}", file=sys.stderr)
        try:
            row["rss_mib"] = psutil.Process(server.pid).memory_info().rss / 2**20
        except psutil.Error:
            pass
    return row


def servers_line(rows: dict) -> str:
    parts = []
    if info := rows.get("orthanc", {}).get("server_info"):
        parts.append(f"Orthanc {info.get('Version', '?')} + DICOMweb {info.get('dicomweb_plugin', '?')}, defaults")
    if any(row.get("server") == "litevna" for row in rows.values()):
        parts.append(f"LiteVNA {git_head()}{' + uncommitted changes' if git_dirty() else ''}")
    return "; ".join(parts)


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(rows: dict, loads: list[Workload], load_info: dict, archive: data.QidoArchive, args,
             mismatches: list[str]) -> str:
    base = rows.get("orthanc", {}).get("timed", {})
    lines = [f"{archive.count} studies × {archive.series_per_study} series × {archive.per_series} instances "
             f"({archive.instances} instances, {len({s.patient['id'] for s in archive.studies})} patients); "
             f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s per query type and server, "
             f"each server alone; {servers_line(rows)}. *1 conn: mean ms*: the check pass, every path "
             "once, one connection, before timing (for LiteVNA as shipped these are its uncached "
             "first answers). LiteVNA as shipped then answers the repeated searches from its search "
             "cache; `--cache-size 0` runs every search.", "",
             "| query (distinct paths rotated) | results/query | server | 1 conn: mean ms | requests | "
             "p50 ms | p99 ms | req/s | req/s LiteVNA/Orthanc | p50 Orthanc/LiteVNA |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in loads:
        per_query = sum(min(len(e), w.limit) for e in w.expected) / len(w.expected)
        first = True
        for variant, row in rows.items():
            head = f"({w.key}) {w.title} ({len(w.paths)}) | {per_query:.1f}" if first else " | "
            first = False
            t = row.get("timed", {}).get(w.key)
            checked = row.get("check", {}).get("workloads", {}).get(w.key, {}).get("rows") or []
            single = fmt(1000 * sum(r["seconds"] for r in checked) / len(checked), 1) if checked else ""
            if not t or "error" in t:
                why = (t or {}).get("error") or row.get("error") or "not run"
                lines.append(f"| {head} | {row.get('label', variant)} | {single} | failed: "
                             f"{why.splitlines()[0][:120].replace('|', '/')} | | | | | |")
                continue
            timeouts = f" ({t['timeouts']} timeouts)" if t.get("timeouts") else ""
            o = base.get(w.key) or {}
            vs_rate = vs_p50 = ""
            if variant != "orthanc" and o.get("req_per_s"):
                vs_rate = f"{t['req_per_s'] / o['req_per_s']:.2f}×"
                vs_p50 = f"{o['p50_ms'] / t['p50_ms']:.1f}×" if o.get("p50_ms") and t.get("p50_ms") else ""
            lines.append(f"| {head} | {row.get('label', variant)} | {single} | {t.get('requests', '')} | "
                         f"{fmt(t['p50_ms'], 2)} | "
                         f"{fmt(t['p99_ms'], 2)}{timeouts} | {fmt(t['req_per_s'])} | {vs_rate} | {vs_p50} |")
    lines += ["", "| load (once, STOW batches) | instances | minutes | instances/s | on disk MiB |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, info in load_info.items():
        lines.append(f"| {name}{' (reused)' if info.get('reused') else ''}, loaded {info['loaded_at']} | "
                     f"{info['instances']} | {info['elapsed_s'] / 60:.1f} | {info['instances_per_s']:.0f} | "
                     f"{info['disk_bytes'] / 2**20:.0f} |")
    notes = []
    for variant, row in rows.items():
        for key, result in row.get("check", {}).get("workloads", {}).items():
            if result["warnings"]:
                notes.append(f"- {variant} ({key}): {len(result['warnings'])} paths off: {result['warnings'][0]}")
            for tag, n in result.get("includefield_absent", {}).items():
                notes.append(f"- {variant} ({key}): includefield {tag} absent from {n} results")
        for p in row.get("check", {}).get("probes", []):
            if not p["exact"]:
                notes.append(f"- {variant} probe *{p['what']}*: HTTP {p['status']}, {p['count']} results, "
                             f"LiteVNA's SPEC expects {p['expected']}")
    notes += [f"- servers differ: {m}" for m in mismatches]
    if notes:
        lines += ["", "Correctness checks (results vs the generator and each other):", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=10000)
    p.add_argument("--instances-per-study", type=int, default=30)
    p.add_argument("--series-per-study", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10, help="wrk duration per query type")
    p.add_argument("--servers", default="orthanc,litevna", help="comma list of: orthanc, litevna")
    p.add_argument("--quick", action="store_true", help="smoke run: 300 studies, 3 s per query type")
    p.add_argument("--batch", type=int, default=100, help="instances per STOW request when loading")
    p.add_argument("--load-concurrency", type=int, default=4, help="concurrent STOW requests when loading")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--workers", type=int, default=1, help="LiteVNA --workers (default 1)")
    p.add_argument("--connections", type=int, default=8, help="wrk connections")
    p.add_argument("--full-sample", type=int, default=5,
                   help="paths per query type whose whole match set is compared UID by UID")
    p.add_argument("--litevna-cache", choices=("both", "on", "off"), default="both",
                   help="measure LiteVNA with its search cache (as shipped), with --cache-size 0, or both")
    p.add_argument("--load-only", action="store_true", help="load the stores (if needed) and stop")
    p.add_argument("--reload", default="", help="comma list of servers whose store is loaded again")
    args = p.parse_args(argv)
    if args.quick:
        args.studies, args.seconds = 300, 3
    servers = args.servers.split(",")
    if unknown := set(servers) - set(harness.SERVERS):
        p.error(f"unknown servers: {unknown}")
    if args.instances_per_study % args.series_per_study:
        p.error("--instances-per-study must be a multiple of --series-per-study")

    archive = data.QidoArchive(args.studies, args.series_per_study,
                               args.instances_per_study // args.series_per_study)
    reload = set(filter(None, args.reload.split(",")))
    load_info = {}
    for name in servers:
        try:
            load_info[name] = ensure_loaded(name, archive, args.batch, args.load_concurrency, name in reload)
        except (harness.ServerUnavailable, load.StowError) as e:
            print(f"!! {name}: loading failed: {e}", file=sys.stderr)
            return 1
    if args.load_only:
        return 0

    loads = workloads(archive)
    variants = [v for name in servers for v in
                ([name] if name != "litevna" else
                 {"on": ["litevna"], "off": ["litevna-nocache"]}.get(args.litevna_cache,
                                                                   ["litevna", "litevna-nocache"]))]
    rows = {}
    for variant in variants:
        try:
            rows[variant] = run_variant(variant, archive, loads, args)
        except harness.ServerUnavailable as e:
            rows[variant] = {"variant": variant, "label": VARIANTS[variant][2], "error": str(e)}
            print(f"!! {variant}: {e}", file=sys.stderr)
    checks = {name: row["check"] for name, row in rows.items() if "check" in row}
    mismatches = compare(checks, loads)
    for line in mismatches:
        print(f"!! servers differ: {line}", file=sys.stderr)

    table = markdown(rows, loads, load_info, archive, args, mismatches)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    meta = {"benchmark": "qido", "timestamp": stamp, "args": vars(args), "python": sys.version,
            "platform": platform.platform(), "cpus": os.cpu_count(), "load": load_info,
            "workloads": {w.key: {"title": w.title, "paths": w.paths, "limit": w.limit,
                                  "expected": [len(e) for e in w.expected]} for w in loads},
            "litevna_source": {"git_head": git_head(), "dirty": git_dirty(),
                               "fingerprint": fingerprint(["litevna/**/*.py", "litevna/**/*.sql"])},
            "servers_differ": mismatches, "rows": rows}
    (RESULTS_DIR / f"qido-{stamp}.md").write_text(f"# QIDO-RS benchmark {stamp}\n\n{table}")
    (RESULTS_DIR / f"qido-{stamp}.json").write_text(json.dumps(meta, indent=2))
    print(f"saved {RESULTS_DIR / f'qido-{stamp}'}.{{md,json}}", file=sys.stderr)
    failed = any("error" in r or any("error" in t for t in r.get("timed", {}).values()) for r in rows.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
