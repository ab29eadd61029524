"""--workers 2: two processes share the socket, a killed one comes back, data is shared."""

import os
import signal
import time

import psutil
import requests

from helpers import dataset, part10
from live import LiveServer, Provisioned


def _pids_serving(url, tries=200):
    """The worker pids seen answering /healthz over fresh connections."""
    seen = set()
    for _ in range(tries):
        seen.add(requests.get(url + "/healthz", timeout=5).json()["pid"])
        if len(seen) >= 2:
            break
    return seen


def _wait_for(predicate, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_two_workers_share_the_socket_and_the_data(tmp_path):
    provisioned = Provisioned(tmp_path / "data")
    with LiveServer(provisioned.data_dir, "--workers", "2") as server:
        supervisor = psutil.Process(server.process.pid)
        assert _wait_for(lambda: len(supervisor.children()) == 2)
        workers = {child.pid for child in supervisor.children()}
        assert _pids_serving(server.url) == workers

        ds = dataset(rows=4, columns=4)
        response = requests.post(server.url + "/demo/dicomweb/studies", data=part10(ds),
                                 headers=provisioned.headers(**{"Content-Type": "application/dicom"}))
        assert response.status_code == 200, response.text
        # Every worker finds what one of them stored (fresh connections spread over both).
        for _ in range(20):
            found = requests.get(server.url + "/demo/dicomweb/studies",
                                 params={"StudyInstanceUID": ds.StudyInstanceUID},
                                 headers=provisioned.headers())
            assert [r["0020000D"]["Value"][0] for r in found.json()] == [ds.StudyInstanceUID]

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)

        def live_children():
            live = set()
            for child in supervisor.children():
                try:
                    if child.status() != psutil.STATUS_ZOMBIE:
                        live.add(child.pid)
                except psutil.NoSuchProcess:
                    pass
            return live

        def replaced():
            # One snapshot per look: the victim gone, two workers, one of them new.
            live = live_children()
            return len(live) == 2 and victim not in live and len(live - workers) == 1

        assert _wait_for(replaced), (workers, victim, live_children())
        replacement = live_children() - workers
        assert len(replacement) == 1, (workers, victim, replacement)
        assert _wait_for(lambda: replacement <= _pids_serving(server.url, tries=50))
        still = requests.get(server.url + f"/demo/dicomweb/studies/{ds.StudyInstanceUID}"
                             "/metadata", headers=provisioned.headers())
        assert still.status_code == 200
        children = supervisor.children()
    # SIGTERM to the supervisor (LiveServer.stop) ends the workers too.
    assert _wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                                     for c in children))
