"""STOW survives ``kill -9`` (SPEC §4 STOW-RS "Durable", §6).

An instance acknowledged in a ReferencedSOPSequence is in the index with its
exact bytes after a restart; an instance cut off by the kill is either absent
or complete, never half-stored; the staging folder is cleaned on restart.
"""

import http.client
import os
import socket
import threading
import time

import pytest
import requests

from helpers import (
    DICOM, DataDir, bearer, instance, multipart_chunks, multipart_type, new_uid, post,
    provision, referenced, sha256,
)
from live import LiveServer

STORE = "demo"
BOUNDARY = "litevna-crash-test"


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory):
    """A data dir with one store; each test starts (and kills) its own servers on it."""
    data_dir = tmp_path_factory.mktemp("crash")
    return str(data_dir), bearer(provision(data_dir, STORE))


class Study:
    """A synthetic one-series study whose instances are regenerated from their number."""

    def __init__(self, count, rows, columns):
        self.uid = new_uid()
        self.count, self.rows, self.columns = count, rows, columns
        self.sent = {}  # SOP Instance UID → sha256 of the bytes last generated

    def sop_uid(self, number):
        return f"{self.uid}.2.{number}"

    def instance(self, number):
        data = instance(study_uid=self.uid, sop_uid=self.sop_uid(number), rows=self.rows,
                        columns=self.columns, seed=number, InstanceNumber=number)
        self.sent[self.sop_uid(number)] = sha256(data)
        return data

    def instances(self):
        return (self.instance(number) for number in range(self.count))

    def stored(self, data):
        """{sop: (blob_key, sha256, size)} of this study's instances in the index."""
        return {sop: row for sop, row in data.instances(STORE).items()
                if sop.startswith(self.uid + ".")}


def assert_intact(data, study):
    """Every indexed instance of study has its blob, byte-identical to what was sent."""
    rows = study.stored(data)
    for sop, (key, digest, size) in rows.items():
        with open(data.blob_path(key), "rb") as fp:
            blob = fp.read()
        assert len(blob) == size, sop
        assert sha256(blob) == digest == study.sent[sop], sop
    return rows


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"after {timeout} s, still not: {what}"
        time.sleep(0.01)


def send_in_background(server, headers, chunks):
    """POST a chunked multipart body from a thread with http.client; (thread, result dict)."""
    result = {}

    def run():
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            connection.request("POST", f"/{STORE}/dicomweb/studies", body=chunks,
                               headers={**headers, "Content-Type": multipart_type(BOUNDARY)},
                               encode_chunked=True)
            response = connection.getresponse()
            result["status"], result["body"] = response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def held_at(chunks, number, hold):
    """The chunks, but stop half-way through chunk ``number`` until hold is set."""
    for index, chunk in enumerate(chunks):
        if index == number:
            yield chunk[:len(chunk) // 2]
            hold.wait(60)
            chunk = chunk[len(chunk) // 2:]
        yield chunk


def test_kill_during_a_large_stow(crash_dir):
    data_dir, headers = crash_dir
    data = DataDir(data_dir)
    staging = os.path.join(data_dir, "staging", socket.gethostname())
    study = Study(400, 512, 512)  # 400 × 512 KiB, generated while sent
    hold = threading.Event()
    server = LiveServer(data_dir).start()
    try:
        chunks = held_at(multipart_chunks(study.instances(), BOUNDARY), 300, hold)
        thread, result = send_in_background(server, headers, chunks)
        # Kill with instances committed and a part half-way through staging.
        wait_for(lambda: len(study.stored(data)) >= 50 and os.listdir(staging),
                 "50 instances committed while the request streams, and a part in staging")
        committed_before_kill = set(study.stored(data))
    finally:
        server.kill9()
        hold.set()
    thread.join(30)
    assert "status" not in result, "the request finished before the kill"
    assert len(committed_before_kill) < study.count

    restarted = LiveServer(data_dir).start()
    try:
        assert os.listdir(staging) == []
        rows = assert_intact(data, study)
        assert committed_before_kill <= set(rows)

        response = post(f"{restarted.url}/{STORE}/dicomweb/studies",
                        multipart_chunks(study.instances(), BOUNDARY), multipart_type(BOUNDARY),
                        headers)
        assert response.status_code == 200, response.text[:500]
        assert referenced(response.json()) == [study.sop_uid(n) for n in range(study.count)]
        assert len(assert_intact(data, study)) == study.count
        assert data.wait_staging_empty() == []
    finally:
        restarted.stop()


@pytest.mark.parametrize("body", ["multipart", "single"])
def test_acknowledged_instances_survive_an_immediate_kill(crash_dir, body):
    data_dir, headers = crash_dir
    data = DataDir(data_dir)
    study = Study(20 if body == "multipart" else 1, 256, 256)
    server = LiveServer(data_dir).start()
    try:
        if body == "multipart":
            response = requests.post(
                f"{server.url}/{STORE}/dicomweb/studies",
                data=b"".join(multipart_chunks(study.instances(), BOUNDARY)),
                headers={**headers, "Content-Type": multipart_type(BOUNDARY)}, timeout=60)
        else:
            response = requests.post(f"{server.url}/{STORE}/dicomweb/studies",
                                     data=study.instance(0),
                                     headers={**headers, "Content-Type": DICOM}, timeout=60)
    finally:
        server.kill9()
    assert response.status_code == 200, response.text[:500]
    acknowledged = referenced(response.json())
    assert len(acknowledged) == study.count

    restarted = LiveServer(data_dir).start()
    try:
        assert os.listdir(os.path.join(data_dir, "staging", socket.gethostname())) == []
        assert set(assert_intact(data, study)) == set(acknowledged)
    finally:
        restarted.stop()
