"""Presigned uploads over HTTP (SPEC §4 "Large uploads"): the client's three steps, every
refusal, a 2 GiB body in bounded memory, a gzip bomb; expiry with a fake clock."""

import base64
import gzip
import hashlib
import hmac
import os
import subprocess
import time
import uuid

import psutil
import pytest
import requests
from isal import isal_zlib
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from helpers import (bearer, dataset, instance, multipart, multipart_chunks, multipart_type,
                     part10, provision, sop_uid_of)
from live import LiveServer

pytestmark = pytest.mark.usefixtures("server_log_is_clean")
LABEL = "demo"


@pytest.fixture(scope="module")
def node(server):
    return server


@pytest.fixture(scope="module")
def key(server):
    return server.provisioned.token


def root(node, label=LABEL):
    return f"{node.url}/{label}/dicomweb"


def upload_url(node, key, label=LABEL):
    response = requests.post(f"{root(node, label)}/studies/upload-url", headers=bearer(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"uploadUrl", "uploadId", "expiresAt"}
    return body


def put(url, body, **headers):
    headers = {"Content-Type": "application/dicom", "Content-Encoding": "gzip", **headers}
    return requests.put(url, data=body, headers={k: v for k, v in headers.items() if v})


def claim(node, key, upload_id, label=LABEL, study=None):
    path = f"{root(node, label)}/studies" + (f"/{study}" if study else "")
    return requests.post(f"{path}?uploadId={upload_id}", headers=bearer(key))


def stored_uids(response):
    return [item["00081155"]["Value"][0] for item in response.json().get("00081199", {}).get(
        "Value", [])]


def failures(response):
    return [item["00081197"]["Value"][0] for item in response.json().get("00081198", {}).get(
        "Value", [])]


# The client's document, verbatim but for the host, label, token and file.

CLIENT_SCRIPT = r'''
# Step 1 — get upload URL
RESP=$(curl -s -X POST https://litevna.app/{label}/dicomweb/studies/upload-url \
  -H "Authorization: Bearer [token]")
UPLOAD_URL=$(echo $RESP | jq -r .uploadUrl)
UPLOAD_ID=$(echo $RESP | jq -r .uploadId)

# Step 2 — gzip and upload the file
gzip -c /path/to/dicom-file.dcm > /tmp/dicom-file.dcm.gz
curl -X PUT "$UPLOAD_URL" \
  -H "Content-Type: application/dicom" \
  -H "Content-Encoding: gzip" \
  --data-binary @/tmp/dicom-file.dcm.gz

# Step 3 — trigger processing
curl -X POST "https://litevna.app/{label}/dicomweb/studies?uploadId=$UPLOAD_ID" \
  -H "Authorization: Bearer [token]"
'''


def test_the_client_documents_shell_example(node, key, tmp_path):
    data = instance(rows=64, columns=64)
    path = tmp_path / "dicom-file.dcm"
    path.write_bytes(data)
    script = (CLIENT_SCRIPT.replace("https://litevna.app", node.url).replace("{label}", LABEL)
              .replace("[token]", key).replace("/path/to/dicom-file.dcm", str(path))
              .replace("/tmp/dicom-file.dcm.gz", str(tmp_path / "dicom-file.dcm.gz")))
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    sop = sop_uid_of(data)
    assert sop in result.stdout  # step 3 printed the STOW response
    found = requests.get(f"{root(node)}/instances?SOPInstanceUID={sop}", headers=bearer(key))
    assert len(found.json()) == 1


def test_multipart_body_same_answer_as_stow(node, key):
    parts = [instance() for _ in range(3)]
    up = upload_url(node, key)
    body = multipart(parts, "b0undary")
    response = put(up["uploadUrl"], gzip.compress(body), **{"Content-Type": multipart_type(
        "b0undary")})
    assert response.status_code == 200, response.text
    assert response.json()["size"] == len(body)
    processed = claim(node, key, up["uploadId"])
    assert processed.status_code == 200, processed.text
    assert sorted(stored_uids(processed)) == sorted(sop_uid_of(p) for p in parts)
    # A direct STOW of the same instances: identical, so stored again, and said so.
    direct = requests.post(f"{root(node)}/studies", data=body, headers={
        **bearer(key), "Content-Type": multipart_type("b0undary")})
    assert direct.status_code == 200
    assert sorted(stored_uids(direct)) == sorted(stored_uids(processed))
    assert "3 instances were already stored" in direct.headers["Warning"]


def test_study_in_the_url_and_mismatch(node, key):
    ds = dataset()
    up = upload_url(node, key)
    assert put(up["uploadUrl"], gzip.compress(part10(ds))).status_code == 200
    wrong = claim(node, key, up["uploadId"], study="1.2.3.4")
    assert wrong.status_code == 409 and failures(wrong) == [0xA900]


# Refusals: each with a clear JSON error and nothing stored.

def error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["error"]
    return body["error"]


def test_upload_url_needs_write(node, key, server):
    assert requests.post(f"{root(node)}/studies/upload-url").status_code == 401
    read = server.provisioned.keys["read"]["value"]
    error(requests.post(f"{root(node)}/studies/upload-url", headers=bearer(read)), 403)


def test_forged_tampered_and_unsigned_urls(node, key):
    up = upload_url(node, key)
    url = up["uploadUrl"]
    signature = url.rsplit("signature=", 1)[1]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    body = gzip.compress(instance())
    assert "signature" in error(put(url.replace(signature, flipped), body), 403)
    assert "signature" in error(put(url.split("&signature=")[0], body), 403)
    later = str(up["expiresAt"] + 3600_000)
    error(put(url.replace(str(up["expiresAt"]), later), body), 403)
    other = url.replace(f"/uploads/{LABEL}/", "/uploads/other/")
    error(put(other, body), 403)
    # None of these used the URL up: the real one still works, once.
    assert put(url, body).status_code == 200
    assert "already been used" in error(put(url, body), 409)


def test_expired_url(node, key, server):
    """An expired URL signed with the server's own key (read from its data dir)."""
    up = upload_url(node, key)
    with open(os.path.join(server.data_dir, "keys", "upload-hmac.key"), "rb") as fp:
        secret = fp.read()
    expires = int(time.time() * 1000) - 1000
    message = f"{up['uploadId']}\n{LABEL}\n{expires}".encode()
    signature = base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest())
    url = (f"{node.url}/uploads/{LABEL}/{up['uploadId']}?expires={expires}"
           f"&signature={signature.rstrip(b'=').decode()}")
    assert "expired" in error(put(url, gzip.compress(instance())), 410)


def test_bodies_that_are_not_gzip(node, key):
    data = instance()
    up = upload_url(node, key)
    assert "Content-Encoding: gzip" in error(put(up["uploadUrl"], data, **{
        "Content-Encoding": None}), 415)
    for broken in (data,  # plain bytes claiming to be gzip
                   gzip.compress(data)[:-20],  # truncated
                   _corrupt(gzip.compress(data)),
                   gzip.compress(data) + b"garbage after the end"):
        up = upload_url(node, key)
        message = error(put(up["uploadUrl"], broken), 400)
        assert "gzip" in message
        assert "is still being uploaded, or its upload failed" in error(
            claim(node, key, up["uploadId"]), 409)
    up = upload_url(node, key)
    error(put(up["uploadUrl"], b""), 400)
    error(put(up["uploadUrl"] .replace(up["uploadId"], str(uuid.uuid4())),
              gzip.compress(data)), 403)


def _corrupt(blob):
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0x55 for b in blob[middle:middle + 64]) + blob[middle + 64:]


def test_concatenated_members_and_zero_padding(node, key):
    first, second = instance(), instance()
    body = multipart([first, second], "cat")
    half = len(body) // 2
    up = upload_url(node, key)
    blob = gzip.compress(body[:half]) + gzip.compress(body[half:]) + b"\0" * 512
    assert put(up["uploadUrl"], blob, **{"Content-Type": multipart_type("cat")}).status_code \
        == 200
    assert len(stored_uids(claim(node, key, up["uploadId"]))) == 2


def test_claims_that_are_refused(node, key, server):
    error(claim(node, key, "not-a-uuid"), 400)
    assert "no upload" in error(claim(node, key, str(uuid.uuid4())), 404)
    up = upload_url(node, key)
    assert "nothing has been uploaded" in error(claim(node, key, up["uploadId"]), 409)
    assert put(up["uploadUrl"], gzip.compress(instance())).status_code == 200
    other_key = server.provisioned.keys["other"]["value"]
    assert "in this image store" in error(claim(node, other_key, up["uploadId"], "other"), 404)
    assert claim(node, key, up["uploadId"]).status_code == 200
    assert "already been processed" in error(claim(node, key, up["uploadId"]), 409)
    read = server.provisioned.keys["read"]["value"]
    error(claim(node, read, up["uploadId"]), 403)
    assert "signature" not in server.log()  # the presigned URL's credential is not logged


def test_scoped_token_upload(node, key):
    inside, outside = dataset(), dataset()
    token = requests.post(f"{node.url}/image-stores/{LABEL}/tokens/create", json={
        "api_key_value": key, "scopes": {"study_ids": [inside.StudyInstanceUID]}}).json()["token"]
    up = upload_url(node, token)
    body = multipart([part10(inside), part10(outside)], "sc0pe")
    put(up["uploadUrl"], gzip.compress(body), **{"Content-Type": multipart_type("sc0pe")})
    processed = claim(node, token, up["uploadId"])
    assert processed.status_code == 202
    assert stored_uids(processed) == [inside.SOPInstanceUID]
    assert failures(processed) == [0x0124]


def _bomb_members(total):
    """Gzip members of 64 MiB of zeros each, up to total decompressed bytes (~65 KiB each)."""
    blob = gzip.compress(bytes(64 << 20), compresslevel=9)
    for _ in range(total // (64 << 20)):
        yield blob


def test_gzip_bomb_refused_quickly(node, key):
    up = upload_url(node, key)
    # 16 GiB of zeros in ~17 MB: refused once the ratio is plain, long before the end.
    response = put(up["uploadUrl"], _bomb_members(16 << 30))
    assert "gzip bomb" in error(response, 413)


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("limits")
    key = provision(data_dir, LABEL)
    with LiveServer(data_dir, "--max-upload", "1MiB") as node:
        yield node, key


def test_over_size(small_limit):
    node, key = small_limit
    random_bytes = os.urandom(2 << 20)  # incompressible: 2 MiB compressed
    up = upload_url(node, key)
    assert "exceeds" in error(put(up["uploadUrl"], gzip.compress(random_bytes)), 413)
    up = upload_url(node, key)
    # Chunked (no Content-Length): refused while streaming.
    chunks = (gzip.compress(random_bytes)[i:i + 65536] for i in range(0, 2_200_000, 65536))
    assert "exceeds" in error(put(up["uploadUrl"], chunks), 413)
    up = upload_url(node, key)
    # Small compressed, too big inflated.
    assert "inflates beyond" in error(put(up["uploadUrl"], gzip.compress(bytes(3 << 20))), 413)


# A 2 GiB body, streamed and processed in bounded memory.

def _gzip_stream(chunks):
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def _peak_rss(process, until):
    peak = 0
    while not until():
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return peak


def test_two_gib_upload_in_bounded_memory(node, key):
    import threading

    count, rows = 32, 4096  # 32 instances × 4096 × 4096 × 16 bits = 32 × 32 MiB = 1 GiB…
    count *= 2  # …twice: 2 GiB
    rng_block = os.urandom(1 << 16)
    template = dataset(rows=16, columns=16)
    boundary = "two-gib-upload"
    uids = []

    def parts():
        for n in range(count):
            ds = dataset(rows=16, columns=16, study_uid=template.StudyInstanceUID,
                         series_uid=template.SeriesInstanceUID)
            ds.Rows = ds.Columns = rows
            # Moderately compressible pixels: the ratio stays far from a bomb's.
            ds.PixelData = (rng_block[: 1 << 15] + bytes(1 << 15)) * (rows * rows * 2 // (1 << 16))
            uids.append(ds.SOPInstanceUID)
            yield part10(ds)

    process = psutil.Process(node.process.pid)
    done = threading.Event()
    result = {}

    def send():
        up = result["upload"] = upload_url(node, key)
        response = put(up["uploadUrl"], _gzip_stream(multipart_chunks(parts(), boundary)),
                       **{"Content-Type": multipart_type(boundary)})
        result["put"] = response
        result["claim"] = claim(node, key, up["uploadId"])
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    peak = _peak_rss(process, done.is_set)
    sender.join()
    assert result["put"].status_code == 200, result["put"].text
    assert result["put"].json()["size"] > 2 << 30
    assert result["claim"].status_code == 200, result["claim"].text[:500]
    assert sorted(stored_uids(result["claim"])) == sorted(uids)
    assert peak < 200 << 20, f"server peak RSS {peak >> 20} MiB"
    # Nothing left behind in the upload's folder but the tombstone.
    folder = os.path.join(node.data_dir, "uploads", result["upload"]["uploadId"])
    assert sorted(os.listdir(folder)) == ["done", "meta.json", "put.lock"]


# Expiry: the sweeper with a fake clock.

class SweepTests(SynchronousTestCase):
    def setUp(self):
        from litevna.uploads import Uploads

        self.now = 1_000_000.0
        folder = self.mktemp()
        self.uploads = Uploads(os.path.join(folder, "uploads"), os.path.join(folder, "keys"),
                               lambda: self.now, 1 << 30)

    def test_expired_unclaimed_removed(self):
        kept = self.uploads.issue(1, "demo", "http://x")["uploadId"]
        self.now += 1800
        gone = self.uploads.issue(1, "demo", "http://x")["uploadId"]
        self.now += 1800 + 1  # the first is past its hour, the second is not
        self.assertEqual(self.uploads.sweep(), 1)
        self.assertFalse(os.path.exists(os.path.join(self.uploads.folder, kept)))
        self.assertTrue(os.path.exists(os.path.join(self.uploads.folder, gone)))

    def test_claim_in_progress_survives_expiry(self):
        from litevna.http.errors import HTTPError

        up = self.uploads.issue(1, "demo", "http://x")
        from litevna.dicomweb.upload import PartWriter

        sink = self.uploads.open_put("demo", up["uploadId"], str(up["expiresAt"]),
                                     up["uploadUrl"].rsplit("signature=", 1)[1],
                                     "application/dicom", "gzip", None,
                                     lambda folder, kind: PartWriter(folder, kind, len))
        sink.write(gzip.compress(b"x" * 100))
        sink.finish()
        self.uploads.claim(1, up["uploadId"])
        self.now += 3601
        self.assertEqual(self.uploads.sweep(), 0)
        self.now += 3600
        self.assertEqual(self.uploads.sweep(), 1)
        self.assertRaises(HTTPError, self.uploads.claim, 1, up["uploadId"])

    def test_expired_claim_refused(self):
        from litevna.http.errors import HTTPError

        up = self.uploads.issue(1, "demo", "http://x")
        self.now += 3601
        with self.assertRaises(HTTPError) as caught:
            self.uploads.claim(1, up["uploadId"])
        self.assertEqual(caught.exception.status, 410)

    def test_sweeper_service_on_a_clock(self):
        from litevna.service import _UploadSweeper

        clock = Clock()
        self.uploads.issue(1, "demo", "http://x")
        sweeper = _UploadSweeper(clock, self.uploads)
        sweeper.startService()
        self.now += 3601
        self.assertEqual(len(os.listdir(self.uploads.folder)), 1)
        clock.advance(_UploadSweeper.INTERVAL)
        self.assertEqual(os.listdir(self.uploads.folder), [])
        sweeper.stopService()


def test_inflate_is_bounded_per_call(tmp_path):
    """One small write cannot make one huge allocation: GzipUpload hands its target the
    inflated bytes INFLATE_CHUNK at a time, however much one write inflates to."""
    from litevna.uploads import INFLATE_CHUNK, GzipUpload

    class Sizes:
        def __init__(self):
            self.sizes = []

        def write(self, data):
            self.sizes.append(len(data))

        def finish(self):
            return [{"file": "x"}]

        def abort(self):
            pass

    target = Sizes()
    sink = GzipUpload(str(tmp_path), "application/dicom", target, 1 << 30)
    sink.write(gzip.compress(os.urandom(1 << 16) * 64))  # 4 MiB from one ~70 KB write
    sink.finish()
    assert sum(target.sizes) == 4 << 20
    assert max(target.sizes) <= INFLATE_CHUNK and len(target.sizes) >= 4
