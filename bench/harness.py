"""Start servers side by side for benchmarks: Orthanc (+DICOMweb plugin) and LiteVNA.

Every server runs in its own temp directory (or, with ``workdir=``, a persistent one that
is kept and reused), in its own session (so Ctrl-C reaches only this script, which then
stops it) and dies with this process (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import atexit
import ctypes
import glob
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


class ServerUnavailable(RuntimeError):
    """The server could not be started or provisioned."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(method: str, url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_live: set["Server"] = set()
atexit.register(lambda: [s.stop() for s in list(_live)])


def _sigterm_to_exit() -> None:
    """Turn SIGTERM into SystemExit so `with` blocks stop their servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


class Server:
    """Base: a subprocess server in a temp dir, usable as a context manager."""

    name = "server"
    ready_path = "/"
    dicomweb_root = ""  # path of the DICOMweb service on base_url
    startup_timeout = 60.0

    def __init__(self, max_body: int | None = None, workdir: Path | str | None = None) -> None:
        """`max_body`: the largest request body the benchmark will send (servers with a limit raise it).

        `workdir`: a persistent directory for the server's data, created if missing and kept
        on stop, so a later run starts on the same data (otherwise a temp dir, removed on stop).
        """
        self.max_body = max_body
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.persistent = workdir is not None
        if self.persistent:
            self.workdir = Path(workdir).resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.cmd: list[str] = []
        self.headers: dict[str, str] = {}
        self.info: dict = {}

    # subclasses provide these
    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def stow_url(self) -> str:
        raise NotImplementedError

    def provision(self) -> None:
        """Called once the server answers `ready_path` (accounts, keys, version info)."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> "Server":
        if threading.current_thread() is threading.main_thread():
            _sigterm_to_exit()
        self.cmd = self.command()
        with self.log_path.open("ab" if self.persistent else "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    self.cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                raise ServerUnavailable(f"{self.name}: cannot run {self.cmd[0]}: {e}") from e
        _live.add(self)
        try:
            self._wait_ready()
            self.provision()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with code {self.proc.returncode} before {self.ready_path} answered: "
                    f"{self.log_tail(1)}\ncommand: {' '.join(self.cmd)}\n--- log tail ---\n{self.log_tail()}")
            try:
                if http_request("GET", self.base_url + self.ready_path, self.headers, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerUnavailable(f"{self.name}: {self.ready_path} did not answer 200 within "
                                f"{self.startup_timeout:.0f}s\n--- log tail ---\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _live.discard(self)
        if not self.persistent:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _find(env: str, candidates: list[str]) -> str:
    for pattern in [os.environ.get(env, ""), *candidates]:
        for hit in sorted(glob.glob(pattern)) if pattern else []:
            return hit
    raise ServerUnavailable(f"none of {candidates} exists (set {env})")


class Orthanc(Server):
    """Orthanc with the DICOMweb plugin, own config, storage and ports."""

    name = "orthanc"
    ready_path = "/system"
    dicomweb_root = "/dicom-web"

    def __init__(self, max_body: int | None = None, workdir: Path | str | None = None,
                 config: dict | None = None) -> None:
        """`config`: options merged over the generated configuration (the rest stays default)."""
        super().__init__(max_body, workdir)
        self.config_overrides = dict(config or {})

    def command(self) -> list[str]:
        config = {
            "Name": "bench",
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "DicomServerEnabled": False,  # nothing uses DIMSE here; Orthanc would bind it on 0.0.0.0
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [_find("ORTHANC_DICOMWEB_PLUGIN", [
                "/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so*"])],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            **self.config_overrides,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return [_find("ORTHANC_BIN", ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"]), str(path)]

    def provision(self) -> None:
        self.info = json.loads(http_request("GET", self.base_url + "/system")[1])
        status, body = http_request("GET", self.base_url + "/plugins/dicom-web")
        self.info["dicomweb_plugin"] = json.loads(body).get("Version") if status == 200 else None
        if not self.info["dicomweb_plugin"]:
            raise ServerUnavailable(f"orthanc: DICOMweb plugin not loaded\n{self.log_tail()}")

    @property
    def stow_url(self) -> str:
        return f"{self.base_url}{self.dicomweb_root}/studies"


#: Appended to every LiteVNA command line (the scripts' --workers sets it).
LITEVNA_ARGS: list[str] = []


class LiteVNA(Server):
    """`python -m litevna serve` from this checkout, with a store and a read/write/delete API key."""

    name = "litevna"
    ready_path = "/healthz"
    label = "bench"
    email = "bench@example.com"
    dicomweb_root = f"/{label}/dicomweb"

    default_max_body = 512 * MiB  # beyond --max-body a direct STOW gets 413

    def __init__(self, max_body: int | None = None, extra_args: list[str] | None = None,
                 workdir: Path | str | None = None) -> None:
        super().__init__(max_body, workdir)
        self.data_dir = self.workdir / "data"
        self.extra_args = list(extra_args or []) + list(LITEVNA_ARGS)
        if max_body and max_body > self.default_max_body:
            self.extra_args += ["--max-body", str(max_body)]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "litevna", "serve", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                "--data-dir", str(self.data_dir), *self.extra_args]

    def admin(self, *args: str, stdin: str | None = None) -> str:
        cmd = [sys.executable, "-m", "litevna", "admin", *args, "--data-dir", str(self.data_dir)]
        r = subprocess.run(cmd, cwd=REPO_ROOT, input=stdin, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise ServerUnavailable(f"litevna: `{' '.join(cmd[1:])}` failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    @property
    def key_file(self) -> Path:
        return self.workdir / "api-key.json"

    def provision(self) -> None:
        """Account, store and key; in a persistent workdir only the first time (the key is kept)."""
        if self.persistent and self.key_file.exists():
            key = json.loads(self.key_file.read_text())["value"]
            self.headers = {"Authorization": f"Bearer {key}"}
            return
        self.admin("create-account", self.email, "--password-stdin", stdin=secrets.token_urlsafe(18) + "\n")
        self.admin("create-store", self.label, "--owner", self.email)
        out = self.admin("create-api-key", self.label, "--permissions", "read,write,delete")
        try:
            key = json.loads(out.strip().splitlines()[-1])["value"]
        except (ValueError, KeyError, IndexError) as e:
            raise ServerUnavailable(f"litevna: create-api-key printed no JSON with 'value': {out!r}") from e
        self.headers = {"Authorization": f"Bearer {key}"}
        if self.persistent:
            tmp = self.key_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"value": key}))
            tmp.chmod(0o600)
            os.replace(tmp, self.key_file)

    @property
    def stow_url(self) -> str:
        return f"{self.base_url}{self.dicomweb_root}/studies"


SERVERS = {"orthanc": Orthanc, "litevna": LiteVNA}


class PeakRss:
    """Peak resident memory (MiB) of a process and its children while the block runs.

    Samples the RSS of the process tree every 20 ms and, on exit, reads VmHWM of the
    process itself; `peak_mib` is the larger of the two.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.sampled_max = self.hwm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        proc = psutil.Process(self.pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sampled_max = max(self.sampled_max, self._tree_rss())
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def _read_hwm(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @property
    def peak_mib(self) -> float:
        return max(self.sampled_max, self.hwm) / MiB

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm = self._read_hwm()
