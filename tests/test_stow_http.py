"""STOW-RS against a real ``litevna serve`` (SPEC §3, §4 STOW-RS; PS3.18 §10.5)."""

import base64
import collections
import glob
import http.client
import json
import os
import shlex
import socket
import subprocess
import time
import warnings

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from helpers import (
    DICOM, TEST_FILES, DataDir, bearer, dataset, failed, instance, multipart, multipart_chunks,
    multipart_type, new_uid, part10, post, provision, referenced, sha256, sop_uid_of,
)
from live import LiveServer, admin

# PS3.18 Table 10.5.3-2 failure reasons (values as SPEC §4 assigns them).
CANNOT_UNDERSTAND = 0xC000
DATA_SET_MISMATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
DUPLICATE = 0x0111

#: The shipped files the server must refuse, and why.
REFUSED = {
    "ExplVR_BigEndNoMeta.dcm": CANNOT_UNDERSTAND,  # no File Meta Information
    "ExplVR_LitEndNoMeta.dcm": CANNOT_UNDERSTAND,
    "no_meta.dcm": CANNOT_UNDERSTAND,
    "rtstruct.dcm": CANNOT_UNDERSTAND,
    "MR_truncated.dcm": CANNOT_UNDERSTAND,  # truncated
    "rtplan_truncated.dcm": CANNOT_UNDERSTAND,
    "badVR.dcm": CANNOT_UNDERSTAND,  # a value that is not what its VR says
    "meta_missing_tsyntax.dcm": TRANSFER_SYNTAX_NOT_SUPPORTED,
    "UN_sequence.dcm": SOP_CLASS_NOT_SUPPORTED,  # no SOPClassUID
    "empty_charset_LEI.dcm": SOP_CLASS_NOT_SUPPORTED,
    "nested_priv_SQ.dcm": SOP_CLASS_NOT_SUPPORTED,
    "no_meta_group_length.dcm": SOP_CLASS_NOT_SUPPORTED,
    "priv_SQ.dcm": SOP_CLASS_NOT_SUPPORTED,
    "JPEGLSNearLossless_08.dcm": DATA_SET_MISMATCH,  # no StudyInstanceUID
    "JPEGLSNearLossless_16.dcm": DATA_SET_MISMATCH,
    "SC_rgb_jls_lossy_line.dcm": DATA_SET_MISMATCH,
    "SC_rgb_jls_lossy_sample.dcm": DATA_SET_MISMATCH,
}

SHIPPED = sorted(os.path.basename(p) for p in glob.glob(os.path.join(TEST_FILES, "*.dcm")))


def _file_bytes(name):
    with open(os.path.join(TEST_FILES, name), "rb") as fp:
        return fp.read()


_RAW = {name: _file_bytes(name) for name in SHIPPED}


def _read(name, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(os.path.join(TEST_FILES, name), force=True, **kwargs)


def _non_numeric_numbers(ds):
    """IS/DS values that are not numbers."""
    bad = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the very values looked for
        elements = list(ds.iterall())
    for element in elements:
        if element.VR in ("IS", "DS") and not element.is_empty:
            for value in element.value if element.VM > 1 else [element.value]:
                try:
                    float(value)
                except (TypeError, ValueError):
                    bad.append(element.tag)
    return bad


def derived_reason(name):
    """Why a shipped file cannot be stored, found with pydicom alone; None if it can be."""
    raw = _RAW[name]
    if raw[128:132] != b"DICM" and raw[:2] != b"\x02\x00":
        return CANNOT_UNDERSTAND  # PS3.10 §7.1: no preamble+prefix and no group 0002 either
    if any(other != raw and other.startswith(raw) for other in _RAW.values()):
        return CANNOT_UNDERSTAND  # a strict prefix of another shipped file: cut short
    ds = _read(name)
    if "TransferSyntaxUID" not in ds.file_meta:
        return TRANSFER_SYNTAX_NOT_SUPPORTED
    if not ds.get("SOPClassUID"):
        return SOP_CLASS_NOT_SUPPORTED
    if not ds.get("StudyInstanceUID"):
        return DATA_SET_MISMATCH
    if _non_numeric_numbers(ds):
        return CANNOT_UNDERSTAND
    return None


def _good():
    return [name for name in SHIPPED if name not in REFUSED]


def _layers():
    """{file: layer} so that no two stored files of one layer share a SOP Instance UID.

    pydicom ships several encodings of one instance (same UID, other bytes); each
    distinct content of a UID goes to its own store, identical copies to the same one.
    """
    contents = collections.defaultdict(list)
    layer = {}
    for name in _good():
        uid = str(_read(name, stop_before_pixels=True).SOPInstanceUID)
        digest = sha256(_RAW[name])
        if digest not in contents[uid]:
            contents[uid].append(digest)
        layer[name] = contents[uid].index(digest)
    return layer


LAYERS = _layers()
REJECTED_STORE = "files-rejected"


def _store_of(name):
    return REJECTED_STORE if name in REFUSED else f"files-{LAYERS[name]}"


@pytest.fixture(scope="module")
def data(server):
    return DataDir(server.data_dir)


@pytest.fixture(scope="module")
def stores(server):
    """Label → Authorization headers, for stores created on demand in the server's data dir."""
    made = {}

    def headers(label):
        if label not in made:
            made[label] = bearer(provision(server.data_dir, label))
        return made[label]

    return headers


def _stow_url(server, label, study_uid=None):
    return f"{server.url}/{label}/dicomweb/studies" + (f"/{study_uid}" if study_uid else "")


# --- pydicom's shipped files, one request each -------------------------------------------------

def test_the_refusal_table_matches_what_pydicom_finds():
    derived = {name: derived_reason(name) for name in SHIPPED}
    assert {name: reason for name, reason in derived.items() if reason is not None} == REFUSED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_alone(server, stores, data, name):
    label = _store_of(name)
    response = post(_stow_url(server, label), _RAW[name], DICOM, stores(label))
    body = response.json()
    assert response.headers["Content-Type"] == "application/dicom+json"
    if name in REFUSED:
        assert response.status_code == 409, body
        assert "00081199" not in body
        assert [reason for _, reason in failed(body)] == [REFUSED[name]]
        assert data.instances(label) == {}
        return
    ds = _read(name, stop_before_pixels=True)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    assert response.status_code == 200, body
    assert "00081198" not in body
    assert referenced(body) == [sop]
    item = body["00081199"]["Value"][0]
    assert item["00081150"]["Value"] == [ds.SOPClassUID]
    base = f"{server.url}/{label}/dicomweb"
    assert item["00081190"]["Value"] == [f"{base}/studies/{study}/series/{series}/instances/{sop}"]
    assert body["00081190"]["Value"] == [f"{base}/studies/{study}"]
    assert data.stored(label, sop) == _RAW[name]


# --- the same files in one multipart request ---------------------------------------------------

def _expected_split(data, label):
    """(referenced UIDs, failures) a request of every shipped file should have got, in order.

    Several good files share a SOP Instance UID with other bytes; which of them the
    server stored first is its choice, read back from the index: that one is
    referenced (with its identical copies), the others fail with 0x0111.
    """
    stored = data.instances(label)
    groups = collections.defaultdict(set)
    expected_refs, expected_fails = [], []
    for name in SHIPPED:
        if name in REFUSED:
            expected_fails.append((None, REFUSED[name]))
            continue
        sop = str(_read(name, stop_before_pixels=True).SOPInstanceUID)
        assert sop in stored, f"{name}: no version of {sop} was stored"
        if stored[sop][1] == sha256(_RAW[name]):
            expected_refs.append(sop)
            groups[sop].add(name)
        else:
            expected_fails.append((sop, DUPLICATE))
    for sop, names in groups.items():
        assert data.stored(label, sop) == _RAW[sorted(names)[0]]
    assert set(groups) == set(stored), "a stored UID that no good file has"
    return expected_refs, expected_fails


@pytest.mark.parametrize("variant", ["quoted", "unquoted", "chunked"])
def test_all_shipped_files_in_one_multipart_request(server, stores, data, variant):
    label = f"batch-{variant}"
    boundary = "LiteVNA test: boundary=1" if variant == "quoted" else "litevna.test-boundary_2"
    parts = [_RAW[name] for name in SHIPPED]
    chunked = variant == "chunked"
    body = multipart_chunks(parts, boundary) if chunked else multipart(parts, boundary)
    response = post(_stow_url(server, label), body, multipart_type(boundary, variant == "quoted"),
                    stores(label))
    assert response.status_code == 202, response.text
    refs, fails = _expected_split(data, label)
    got = response.json()
    assert referenced(got) == refs
    got_fails = failed(got)
    assert len(got_fails) == len(fails)
    # A refused file may have no UID to report; a duplicate must name its own.
    assert [(uid if want else None, reason)
            for (uid, reason), (want, _) in zip(got_fails, fails)] == fails


# --- duplicates --------------------------------------------------------------------------------

def _blob_files(data, sop):
    return glob.glob(os.path.join(data.path, "blobs", "**", f"{sop}.*"), recursive=True)


def test_same_bytes_twice_is_stored_once(server, data):
    original = instance()
    sop = sop_uid_of(original)
    for _ in range(2):
        response = post(_stow_url(server, "demo"), original, DICOM, server.provisioned.headers())
        assert response.status_code == 200, response.text
        assert referenced(response.json()) == [sop]
    assert len(data.rows(sop)) == 1
    assert len(_blob_files(data, sop)) == 1
    assert data.stored("demo", sop) == original


def _original_and_changed():
    ds = dataset(PatientName="Original^Name")
    original = part10(ds)
    ds.PatientName = "Changed^Name"
    return str(ds.SOPInstanceUID), original, part10(ds)


def test_same_uid_other_bytes_is_refused(server, data):
    sop, original, changed = _original_and_changed()
    headers = server.provisioned.headers()
    assert post(_stow_url(server, "demo"), original, DICOM, headers).status_code == 200
    response = post(_stow_url(server, "demo"), changed, DICOM, headers)
    assert response.status_code == 409, response.text
    assert failed(response.json()) == [(sop, DUPLICATE)]
    assert data.stored("demo", sop) == original
    assert len(data.rows(sop)) == 1
    assert len(_blob_files(data, sop)) == 1
    assert data.wait_staging_empty() == []


@pytest.fixture(scope="module")
def replace_server(tmp_path_factory):
    """A server with --on-duplicate replace over its own data dir (store "demo")."""
    data_dir = tmp_path_factory.mktemp("replace")
    token = provision(data_dir, "demo")
    live = LiveServer(data_dir, "--on-duplicate", "replace").start()
    live.headers = bearer(token)
    yield live
    live.stop()


def test_replace_mode_stores_the_new_bytes(replace_server):
    data = DataDir(replace_server.data_dir)
    sop, original, changed = _original_and_changed()
    url = _stow_url(replace_server, "demo")
    assert post(url, original, DICOM, replace_server.headers).status_code == 200
    [old_blob] = _blob_files(data, sop)
    response = post(url, changed, DICOM, replace_server.headers)
    assert response.status_code == 200, response.text
    assert referenced(response.json()) == [sop]
    assert data.stored("demo", sop) == changed
    assert len(data.rows(sop)) == 1
    assert not os.path.exists(old_blob)
    assert len(_blob_files(data, sop)) == 1


# --- the study in the URL ----------------------------------------------------------------------

def test_stow_to_a_study_url(server, data):
    headers = server.provisioned.headers()
    study = new_uid()
    mine, other = instance(study_uid=study), instance()
    response = post(_stow_url(server, "demo", study), other, DICOM, headers)
    assert response.status_code == 409, response.text
    assert [reason for _, reason in failed(response.json())] == [DATA_SET_MISMATCH]
    assert data.rows(sop_uid_of(other)) == []
    response = post(_stow_url(server, "demo", study), mine, DICOM, headers)
    assert response.status_code == 200, response.text
    assert referenced(response.json()) == [sop_uid_of(mine)]


def _raw_post(server, path, body, headers):
    """A POST with the path exactly as given (requests would normalise dot segments)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("study", ["1.2.abc", "..%2Fetc", "..", "1.02.3", "1." + "2" * 70])
def test_invalid_study_uid_in_the_url(server, data, study):
    body = instance()
    headers = server.provisioned.headers(**{"Content-Type": DICOM})
    status, text = _raw_post(server, f"/demo/dicomweb/studies/{study}", body, headers)
    assert status == 400, text
    assert b"Traceback" not in text
    assert data.rows(sop_uid_of(body)) == []


@pytest.mark.parametrize("path", ["/demo/dicomweb/studies/../etc",
                                  "/demo/dicomweb/studies/../../../etc/passwd"])
def test_dot_segments_in_the_url(server, data, path):
    """A path that leaves the studies resource is refused as a client error, never a 5xx."""
    body = instance()
    headers = server.provisioned.headers(**{"Content-Type": DICOM})
    status, text = _raw_post(server, path, body, headers)
    assert status in (400, 404), text
    assert b"Traceback" not in text
    assert data.rows(sop_uid_of(body)) == []


# --- bodies the server must refuse -------------------------------------------------------------

B = "refused-body-boundary"


def _error_cases():
    """name → (body, Content-Type, expected status, SOP UIDs inside the body)."""
    a = instance()
    uids = [sop_uid_of(a)]
    return {
        "text/plain": (a, "text/plain", 415, uids[:1]),
        "multipart of dicom+json": (multipart([a], B),
                                    f'multipart/related; type="application/dicom+json"; '
                                    f'boundary={B}', 415, uids[:1]),
        "multipart without boundary": (multipart([a], B),
                                       f'multipart/related; type="{DICOM}"', 400, uids[:1]),
        "empty application/dicom": (b"", DICOM, 400, []),
        "empty multipart": (b"", multipart_type(B), 400, []),
        "multipart without parts": (f"--{B}--\r\n".encode(), multipart_type(B), 400, []),
    }


ERROR_CASES = _error_cases()


def test_multipart_cut_before_its_closing_boundary(server, data):
    """Complete parts are stored on their own merits; the break is one more failure (202)."""
    a, b = instance(), instance()
    cut = multipart([a, b], B, close=False) + f"--{B}\r\nContent-Type: {DICOM}\r\n\r\n".encode() \
        + instance()[:300]
    response = post(_stow_url(server, "demo"), cut, multipart_type(B), server.provisioned.headers())
    assert response.status_code == 202, response.text
    body = response.json()
    assert referenced(body) == [sop_uid_of(a), sop_uid_of(b)]
    assert [reason for _, reason in failed(body)] == [CANNOT_UNDERSTAND]
    assert data.stored("demo", sop_uid_of(a)) == a
    assert data.stored("demo", sop_uid_of(b)) == b
    assert data.wait_staging_empty() == []


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_refused_body(server, data, case):
    body, content_type, status, uids = ERROR_CASES[case]
    response = post(_stow_url(server, "demo"), body, content_type, server.provisioned.headers())
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == status
    assert data.wait_staging_empty() == []
    stored = [uid for uid in uids if data.rows(uid)]
    assert stored == [], f"{len(stored)} instance(s) of a request answered {status} were stored"


def _ct_small_cuts():
    raw = _RAW["CT_small.dcm"]
    # The file ends with a (FFFC,FFFC) Data Set Trailing Padding OB element of 126 bytes.
    trailer = len(raw) - 126 - 12
    assert raw[trailer:trailer + 8] == b"\xfc\xff\xfc\xffOB\x00\x00"
    assert int.from_bytes(raw[trailer + 8:trailer + 12], "little") == 126
    in_header = raw.index(b"1.2.840.10008.5.1.4.1.1.2\x00", 200) + 5  # inside SOPClassUID
    return {"inside SOPClassUID": raw[:in_header],
            "inside PixelData": raw[:-200],
            "inside trailing padding (FFFC,FFFC), 64 bytes short": raw[:-64],
            "inside trailing padding (FFFC,FFFC), 1 byte short": raw[:-1]}


UNREADABLE = {"random bytes": os.urandom(4096),
              "preamble and DICM then garbage": bytes(128) + b"DICM" + os.urandom(1000),
              **{f"CT_small cut {where}": body for where, body in _ct_small_cuts().items()}}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_instance(server, stores, data, case):
    label = f"unreadable-{list(UNREADABLE).index(case)}"
    response = post(_stow_url(server, label), UNREADABLE[case], DICOM, stores(label))
    assert response.status_code == 409, f"an unreadable file was not refused: {response.text}"
    assert [reason for _, reason in failed(response.json())] == [CANNOT_UNDERSTAND]
    assert data.instances(label) == {}


def _body_shapes():
    """name → (instances, body, Content-Type) of well-formed bodies in less usual shapes."""
    a, b = instance(), instance()
    plain = multipart([a, b], B)
    untyped = f"--{B}\r\n\r\n".encode() + a + f"\r\n--{B}--\r\n".encode()
    return {
        "preamble and epilogue": ([a, b], b"a preamble\r\n" + plain + b"an epilogue\r\n",
                                  multipart_type(B)),
        "part without Content-Type": ([a], untyped, multipart_type(B)),
        "part type with parameters": ([a], multipart(
            [(f"{DICOM}; transfer-syntax=1.2.840.10008.1.2.1", a)], B), multipart_type(B)),
        "7-byte chunks": ([a, b], lambda: (plain[i:i + 7] for i in range(0, len(plain), 7)),
                          multipart_type(B)),
        "no type parameter": ([a], multipart([a], B), f"multipart/related; boundary={B}"),
        "media type in capitals": ([a], a, "Application/DICOM"),
    }


BODY_SHAPES = _body_shapes()


@pytest.mark.parametrize("shape", list(BODY_SHAPES))
def test_body_shapes(server, data, shape):
    instances, body, content_type = BODY_SHAPES[shape]
    body = body() if callable(body) else body  # a generator: chunked transfer encoding
    response = post(_stow_url(server, "demo"), body, content_type, server.provisioned.headers())
    assert response.status_code == 200, response.text
    assert referenced(response.json()) == [sop_uid_of(i) for i in instances]
    assert [data.stored("demo", sop_uid_of(i)) for i in instances] == instances


def test_part_that_is_not_dicom(server, data):
    a, b = instance(), instance()
    parts = [a, ("text/plain", b"hello, I am not DICOM"), b]
    response = post(_stow_url(server, "demo"), multipart(parts, B), multipart_type(B),
                    server.provisioned.headers())
    assert response.status_code == 202, response.text
    body = response.json()
    assert referenced(body) == [sop_uid_of(a), sop_uid_of(b)]
    assert [reason for _, reason in failed(body)] == [CANNOT_UNDERSTAND]
    assert data.stored("demo", sop_uid_of(b)) == b


# --- --max-body --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("small")
    token = provision(data_dir, "demo")
    live = LiveServer(data_dir, "--max-body", "1MiB").start()
    live.token = token
    yield live
    live.stop()


def _response_on_socket(port, request_bytes, timeout=10):
    """Send request_bytes (headers, maybe part of a body); (status, headers, body) answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_bytes)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


def _head(server, length, expect=False):
    lines = ["POST /demo/dicomweb/studies HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             f"Authorization: Bearer {server.token}", f"Content-Type: {DICOM}",
             f"Content-Length: {length}"] + (["Expect: 100-continue"] if expect else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("expect", [True, False], ids=["expect-100-continue", "body-started"])
def test_body_over_max_body_is_refused_before_it_is_sent(small_server, expect):
    body = instance(rows=1024, columns=1024)  # 2 MiB of pixels
    sent = _head(small_server, len(body), expect) + (b"" if expect else body[:65536])
    started = time.monotonic()
    status, headers, text = _response_on_socket(small_server.port, sent)
    assert status == 413, text  # not "100 Continue": the answer comes before any body
    assert time.monotonic() - started < 1.5  # not after the server gave up waiting
    assert headers["content-type"] == "application/json"
    assert "upload-url" in json.loads(text)["error"]
    assert DataDir(small_server.data_dir).rows(sop_uid_of(body)) == []


def test_body_under_max_body_is_stored(small_server):
    body = instance(rows=640, columns=640)  # 0.8 MiB
    response = post(_stow_url(small_server, "demo"), body, DICOM, bearer(small_server.token))
    assert response.status_code == 200, response.text
    assert DataDir(small_server.data_dir).stored("demo", sop_uid_of(body)) == body


def _chunks(data, size=65536):
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.mark.parametrize("shape", ["one large instance", "many small parts"])
def test_chunked_body_growing_past_max_body(small_server, shape):
    """413 (or a closed connection); instances completed before the limit may be stored,
    each whole and byte-identical, none half-stored."""
    if shape == "one large instance":
        instances = [instance(rows=1024, columns=1024)]
        body, content_type = _chunks(instances[0]), DICOM
    else:
        instances = [instance(rows=256, columns=128) for _ in range(24)]  # 24 × 64 KiB
        body, content_type = multipart_chunks(instances, B), multipart_type(B)
    try:
        response = post(_stow_url(small_server, "demo"), body, content_type,
                        bearer(small_server.token))
        assert response.status_code == 413, response.text
        assert "upload-url" in response.json()["error"]
    except requests.ConnectionError:
        pass
    data = DataDir(small_server.data_dir)
    assert data.wait_staging_empty() == []
    time.sleep(0.3)  # let any commit already queued land before looking
    for sent in instances:
        kept = data.stored("demo", sop_uid_of(sent))
        assert kept is None or kept == sent
    if shape == "one large instance":
        assert data.rows(sop_uid_of(instances[0])) == []


# --- authentication (SPEC §3; Bearer only so far) ----------------------------------------------

def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def credentials(server, replace_server):
    """name → (Authorization header value or None, expected status)."""
    provisioned = server.provisioned
    data_dir = provisioned.data_dir
    value = provisioned.token
    header, payload, signature = value.split(".")
    flipped = bytearray(_unb64(signature))
    flipped[len(flipped) // 2] ^= 0x01
    kid = json.loads(_unb64(header))["kid"]
    unsigned = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())

    expiring = admin(data_dir, "create-api-key", provisioned.label, "--expires-in", "1")
    expiring_made = time.monotonic()
    revoked = admin(data_dir, "create-api-key", provisioned.label)
    works = post(_stow_url(server, provisioned.label), instance(), DICOM, bearer(revoked["value"]))
    assert works.status_code == 200, works.text  # and the server has now seen the key
    admin(data_dir, "revoke-api-key", provisioned.label, revoked["id"])
    revoked_at = time.monotonic()
    time.sleep(max(0.0, expiring_made + 2 - time.monotonic(), revoked_at + 1.1 - time.monotonic()))

    return {
        "missing": (None, 401),
        "not a token": ("Bearer not-a-token", 401),
        "empty bearer": ("Bearer", 401),
        "three dots": ("Bearer x.y.z", 401),
        "header only": (f"Bearer {header}", 401),
        "cut short": (f"Bearer {value[:-12]}", 401),
        "flipped signature byte": (f"Bearer {header}.{payload}.{_b64(bytes(flipped))}", 401),
        "alg none": (f"Bearer {unsigned}.{payload}.", 401),
        "another server's key": (replace_server.headers["Authorization"], 401),
        "expired key": (f"Bearer {expiring['value']}", 401),
        "revoked key": (f"Bearer {revoked['value']}", 401),
        "key of another store": (provisioned.headers("other")["Authorization"], 403),
        "read-only key": (provisioned.headers("read")["Authorization"], 403),
    }


AUTH_CASES = ["missing", "not a token", "empty bearer", "three dots", "header only", "cut short",
              "flipped signature byte", "alg none", "another server's key", "expired key",
              "revoked key", "key of another store", "read-only key"]


@pytest.mark.parametrize("case", AUTH_CASES)
@pytest.mark.parametrize("multipart_body", [False, True], ids=["dicom", "multipart"])
def test_stow_refused_without_valid_credentials(server, data, credentials, case, multipart_body):
    authorization, status = credentials[case]
    headers = {"Authorization": authorization} if authorization else {}
    body = instance()
    if multipart_body:
        payload, content_type = multipart([body], B), multipart_type(B)
    else:
        payload, content_type = body, DICOM
    response = post(_stow_url(server, "demo"), payload, content_type, headers)
    assert response.status_code == status, response.text
    assert response.json()["status"] == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="litevna"'
    assert data.rows(sop_uid_of(body)) == []


# --- real clients ------------------------------------------------------------------------------

def test_curl_example_of_the_client_document(server, data, tmp_path):
    body = instance()
    path = tmp_path / "dicom-file.dcm"
    path.write_bytes(body)
    command = (f"curl -X POST {server.url}/demo/dicomweb/studies "
               f"-H \"Authorization: Bearer {server.provisioned.token}\" "
               f"-H \"Content-Type: application/dicom\" "
               f"--data-binary @{shlex.quote(str(path))}")
    # The example verbatim; only the status code is asked for at the end.
    result = subprocess.run(command + " -s -w '\\n%{http_code}'", shell=True, capture_output=True,
                            text=True, timeout=30, check=True)
    text, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    assert referenced(json.loads(text)) == [sop_uid_of(body)]
    assert data.stored("demo", sop_uid_of(body)) == body


def test_dicomweb_client_store_instances(server, data):
    study = new_uid()
    small = dataset(study_uid=study)
    large = dataset(study_uid=study, rows=1024, columns=1024)  # over its chunk size: chunked
    client = DICOMwebClient(url=f"{server.url}/demo/dicomweb",
                            headers=server.provisioned.headers())
    result = client.store_instances([small, large])
    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == \
        [small.SOPInstanceUID, large.SOPInstanceUID]
    assert "FailedSOPSequence" not in result
    for ds in (small, large):
        # dicomweb-client writes Part 10 without the preamble (force: read it anyway)
        stored = pydicom.dcmread(data.blob_path(data.rows(ds.SOPInstanceUID)[0][1]), force=True)
        assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert stored.PixelData == ds.PixelData
