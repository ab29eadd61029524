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


def test_kill_a_worker_under_load_loses_no_acknowledged_instance(tmp_path):
    """STOWs keep coming over fresh connections while one worker is killed with -9: every
    instance that got its 200 is there afterwards (the other worker and the replacement
    serve it); requests that the dead worker held fail at the client, never silently."""
    import threading

    provisioned = Provisioned(tmp_path / "data")
    acknowledged, refused, stop = [], [], threading.Event()
    with LiveServer(provisioned.data_dir, "--workers", "2") as server:
        supervisor = psutil.Process(server.process.pid)
        assert _wait_for(lambda: len(supervisor.children()) == 2)
        headers = provisioned.headers(**{"Content-Type": "application/dicom"})

        def load():
            while not stop.is_set():
                ds = dataset(rows=8, columns=8)
                try:
                    response = requests.post(server.url + "/demo/dicomweb/studies",
                                             data=part10(ds), headers=headers, timeout=10)
                except requests.RequestException:
                    refused.append(ds.SOPInstanceUID)
                    continue
                if response.status_code == 200:
                    acknowledged.append((ds.StudyInstanceUID, ds.SOPInstanceUID))
                else:
                    refused.append(ds.SOPInstanceUID)

        senders = [threading.Thread(target=load) for _ in range(3)]
        for sender in senders:
            sender.start()
        assert _wait_for(lambda: len(acknowledged) >= 20)
        victim = supervisor.children()[0].pid
        os.kill(victim, signal.SIGKILL)
        before = len(acknowledged)
        assert _wait_for(lambda: len(acknowledged) >= before + 20)  # still storing
        assert _wait_for(lambda: victim not in {c.pid for c in supervisor.children()
                                                if c.status() != psutil.STATUS_ZOMBIE}
                         and len(supervisor.children()) == 2)
        stop.set()
        for sender in senders:
            sender.join()
        missing = []
        for study, sop in acknowledged:
            found = requests.get(server.url + "/demo/dicomweb/instances",
                                 params={"SOPInstanceUID": sop}, headers=provisioned.headers())
            if [r["00080018"]["Value"][0] for r in found.json()] != [sop]:
                missing.append(sop)
        assert missing == [], f"{len(missing)} acknowledged instances lost"
