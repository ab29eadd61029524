"""A real LiteVNA server in a subprocess on a free port, for integration tests."""

import atexit
import glob
import hashlib
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlsplit, urlunsplit


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(data_dir, *args, stdin=None):
    """Run ``litevna admin ...``; its JSON output."""
    result = subprocess.run(
        [sys.executable, "-m", "litevna", "admin", *args, "--data-dir", str(data_dir),
         *database_args(data_dir)],
        input=stdin, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"litevna admin {args} failed: {result.stderr}")
    return json.loads(result.stdout)


class LiveServer:
    """``litevna serve`` on 127.0.0.1:<free port> over data_dir."""

    def __init__(self, data_dir, *extra_args, env=None):
        self.data_dir = str(data_dir)
        self.extra_args = extra_args
        self.env = dict(os.environ, **(env or {}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.log_path = os.path.join(self.data_dir, f"server-{self.port}.log")

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "litevna", "serve", "--listen",
             f"tcp:{self.port}:interface=127.0.0.1", "--data-dir", self.data_dir,
             *([] if "--database" in self.extra_args else database_args(self.data_dir)),
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()}")

    def log(self):
        with open(self.log_path, "rb") as fp:
            return fp.read().decode("utf-8", "replace")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def kill9(self):
        self.process.kill()
        self.process.wait()
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Provisioned:
    """A data dir with an account, two stores and keys of each permission set."""

    label = "demo"
    other_label = "other"

    def __init__(self, data_dir):
        self.data_dir = str(data_dir)
        admin(data_dir, "create-account", "owner@example.org", "--password-stdin",
              stdin="correct horse battery\n")
        admin(data_dir, "create-store", self.label, "--owner", "owner@example.org")
        admin(data_dir, "create-store", self.other_label, "--owner", "owner@example.org")
        self.keys = {
            "all": admin(data_dir, "create-api-key", self.label),
            "read": admin(data_dir, "create-api-key", self.label, "--permissions", "read"),
            "other": admin(data_dir, "create-api-key", self.other_label),
        }
        self.token = self.keys["all"]["value"]

    def headers(self, key="all", **extra):
        return {"Authorization": f"Bearer {self.keys[key]['value']}", **extra}


class RedisServer:
    """A private ``redis-server`` on a free port (nothing kept on disk)."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        import shutil

        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        os.makedirs(self.folder, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# The index backend of the integration suites: SQLite in each data dir, or with
# LITEVNA_TEST_DATABASE=postgresql a PostgreSQL database of each data dir's own.

def on_postgres():
    """True when this run's servers keep their index in PostgreSQL."""
    return os.environ.get("LITEVNA_TEST_DATABASE", "sqlite") == "postgresql"


def database_url(data_dir):
    """The --database of a data dir: None (its SQLite file), or on a PostgreSQL run the
    URL of the data dir's own database, created on first use."""
    return postgres().database_for(data_dir) if on_postgres() else None


def database_args(data_dir):
    """The ``--database`` option for a data dir's ``litevna serve`` or ``admin``, if any."""
    url = database_url(data_dir)
    return ["--database", url] if url else []


def config(data_dir):
    """The Config of a data dir, as ``litevna admin --data-dir data_dir`` would have it."""
    from litevna.config import Config

    return Config.from_options({"data-dir": str(data_dir), "database": database_url(data_dir)})


_postgres = []  # this process's PostgresServer, or what kept it from starting


def postgres():
    """This test process's PostgresServer, started on first use and stopped at exit."""
    if not _postgres:
        try:
            _postgres.append(PostgresServer().start())
        except Exception as exc:  # noqa: BLE001 - kept, so that no test tries again
            _postgres.append(exc)
        else:
            atexit.register(_postgres[0].stop)
    if isinstance(_postgres[0], Exception):
        raise RuntimeError(f"PostgreSQL did not start: {_postgres[0]}")
    return _postgres[0]


def require_postgres():
    """postgres(), or a skip where no server can be had; in CI (env CI) an error instead."""
    import unittest

    try:
        return postgres()
    except Exception as exc:  # noqa: BLE001 - whatever kept the server from starting
        if os.environ.get("CI"):
            raise RuntimeError(f"no PostgreSQL for the tests, and CI must have one: {exc}")
        raise unittest.SkipTest(f"no PostgreSQL for the tests: {exc}") from None


def postgres_binaries():
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    installed = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not installed:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql) "
                           "and LITEVNA_TEST_POSTGRES names no server")
    return os.path.dirname(max(installed, key=lambda path: float(path.split("/")[4])))


class PostgresServer:
    """A private PostgreSQL cluster on a free port (initdb into a temp dir, pg_ctl), or
    the server that LITEVNA_TEST_POSTGRES names (a URL allowed to create databases)."""

    def __init__(self):
        self.url = os.environ.get("LITEVNA_TEST_POSTGRES")
        self.folder = None
        self._user = None
        self._databases = {}

    def start(self):
        if self.url:
            self._execute("SELECT 1")
            return self
        binaries = postgres_binaries()
        self.folder = tempfile.mkdtemp(prefix="litevna-pg-")
        try:
            self._start(binaries)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            raise
        return self

    def _start(self, binaries):
        if os.geteuid() == 0:
            # initdb refuses to run as root: the cluster belongs to an unprivileged user.
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                self._user = pwd.getpwnam("nobody")
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
        data = os.path.join(self.folder, "data")
        self._run(os.path.join(binaries, "initdb"), "-D", data, "--auth=trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        port = free_port()
        self._pg_ctl = os.path.join(binaries, "pg_ctl")
        self._run(self._pg_ctl, "-D", data, "-l", os.path.join(self.folder, "server.log"),
                  "-w", "-t", "60", "-o",
                  f"-k {self.folder} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
                  "start")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *command):
        """Run a PostgreSQL program as the cluster's owner."""
        owner = {}
        if self._user is not None:
            owner = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        result = subprocess.run(command, cwd=self.folder, capture_output=True, text=True,
                                check=False, **owner)
        if result.returncode:
            raise RuntimeError(f"{os.path.basename(command[0])} failed: "
                               f"{result.stdout}{result.stderr}")

    def _execute(self, statement):
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def url_of(self, name):
        """The URL of database name on this server."""
        return urlunsplit(urlsplit(self.url)._replace(path="/" + name))

    def create_database(self, name=None, options=""):
        """A new empty database (named for this process and call unless named); its URL.
        options: more of CREATE DATABASE (``LOCALE_PROVIDER icu ICU_LOCALE 'en-US'``)."""
        name = name or f"litevna_{os.getpid()}_{next(_database_serial)}"
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' {options}")
        self._databases.setdefault(name, self.url_of(name))
        return self.url_of(name)

    def drop_database(self, url):
        """Remove a database this server made (closing its connections)."""
        name = urlsplit(url).path.lstrip("/")
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.pop(name, None)

    def database_for(self, data_dir):
        """The database of a data dir, created empty on its first use in this process."""
        name = "litevna_dir_" + hashlib.sha256(
            os.path.realpath(str(data_dir)).encode()).hexdigest()[:20]
        return self._databases.get(name) or self.create_database(name)

    def stop(self):
        if self.folder is None:
            # Another's server: leave it as found.
            for url in list(self._databases.values()):
                self.drop_database(url)
            return
        try:
            self._run(self._pg_ctl, "-D", os.path.join(self.folder, "data"), "-m", "immediate",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


_database_serial = itertools.count(1)
