"""SIGTERM: the server stops listening, finishes the requests in flight, then exits."""

import http.client
import json
import os
import signal
import socket
import time

from helpers import dataset, part10
from live import LiveServer, Provisioned


def test_sigterm_finishes_a_stow_in_flight(tmp_path):
    provisioned = Provisioned(tmp_path / "data")
    server = LiveServer(provisioned.data_dir).start()
    body = part10(dataset(rows=64, columns=64))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/demo/dicomweb/studies")
    for name, value in provisioned.headers(**{"Content-Type": "application/dicom",
                                              "Content-Length": str(len(body))}).items():
        conn.putheader(name, value)
    conn.endheaders(body[:len(body) // 2])
    # In flight once the server streams the body into its staging folder.
    staging = os.path.join(provisioned.data_dir, "staging", socket.gethostname())
    deadline = time.monotonic() + 20
    while not (os.path.isdir(staging) and os.listdir(staging)):
        assert time.monotonic() < deadline, "the body never reached staging"
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    probe = socket.socket()
    try:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0, "still listening"
    finally:
        probe.close()
    conn.send(body[len(body) // 2:])
    response = conn.getresponse()
    document = json.loads(response.read())
    conn.close()
    assert response.status == 200, document
    assert len(document["00081199"]["Value"]) == 1
    assert server.process.wait(20) == 0
    server.stop()
