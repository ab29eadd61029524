"""A real LiteVNA server in a subprocess on a free port, for integration tests."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(data_dir, *args, stdin=None):
    """Run ``litevna admin ...``; its JSON output."""
    result = subprocess.run(
        [sys.executable, "-m", "litevna", "admin", *args, "--data-dir", str(data_dir)],
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
             *self.extra_args], stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
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
