"""Small helpers for the integration tests: DICOM instances, multipart bodies, the data dir."""

import contextlib
import hashlib
import io
import itertools
import os
import socket
import random
import re
import sqlite3
import time
import warnings

import numpy
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from live import config, database_url

DICOM = "application/dicom"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")

# A root per test run, so UIDs never collide with an earlier run's data dir.
_ROOT = f"1.2.826.0.1.3680043.10.{random.randrange(1, 10 ** 9)}"
_serial = itertools.count(1)


class FakeClock:
    """Seconds that pass only when a test says so (``clock.now += 1``)."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def new_uid():
    """A fresh, valid UID (PS3.5 §9.1)."""
    return f"{_ROOT}.{next(_serial)}"


def dataset(study_uid=None, sop_uid=None, series_uid=None, rows=16, columns=16, seed=0,
            frames=1, **attributes):
    """A CT image data set with File Meta Information; pixels are random from seed.

    With ``frames`` > 1 it is a multi-frame image (NumberOfFrames set).
    """
    sop_uid = sop_uid or new_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or new_uid()
    ds.SeriesInstanceUID = series_uid or ds.StudyInstanceUID + ".1"
    ds.Modality = "CT"
    ds.PatientID = "LITEVNA-TEST"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    shape = (rows, columns) if frames == 1 else (frames, rows, columns)
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = numpy.random.default_rng(seed).integers(-1000, 3000, shape, numpy.int16)
    ds.PixelData = pixels.tobytes()
    return ds


def part10(ds):
    """The Part 10 bytes of a data set."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def instance(**kwargs):
    """Part 10 bytes of ``dataset(**kwargs)``."""
    return part10(dataset(**kwargs))


def sop_uid_of(data):
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def multipart_type(boundary, quoted=True):
    """The Content-Type of a STOW multipart body (PS3.18 §10.5.1.2)."""
    if quoted:
        return f'multipart/related; type="{DICOM}"; boundary="{boundary}"'
    return f"multipart/related; type={DICOM}; boundary={boundary}"


def multipart_chunks(parts, boundary, close=True):
    """Yield a multipart/related body part by part; parts are bytes or (content_type, bytes)."""
    for part in parts:
        content_type, data = part if isinstance(part, tuple) else (DICOM, part)
        assert b"--" + boundary.encode() not in data, "the boundary occurs in a part"
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    if close:
        yield f"--{boundary}--\r\n".encode()


def multipart(parts, boundary, close=True):
    return b"".join(multipart_chunks(parts, boundary, close))


def post(url, data, content_type, headers, **kwargs):
    """POST and check what must hold for every response: no 5xx, no traceback."""
    response = requests.post(url, data=data, headers={**headers, "Content-Type": content_type},
                             timeout=60, **kwargs)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    return response


def request(method, url, headers=None, session=None, **kwargs):
    """Any request, checking what must hold for every response: no 5xx, no traceback,
    no body cut off after its status line (the connection cut mid-stream)."""
    try:
        response = (session or requests).request(method, url, headers=headers or {},
                                                 timeout=60, **kwargs)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        pytest.fail(f"{method} {url} ({headers}): the connection was cut: {exc}")
    assert response.status_code < 500, response.text
    if not kwargs.get("stream"):  # a streamed body is the caller's to read and check
        assert b"Traceback" not in response.content
    return response


def get(url, headers=None, session=None, **kwargs):
    return request("GET", url, headers, session, **kwargs)


def boundary_of(content_type):
    """The boundary parameter of a multipart Content-Type (quoted or not)."""
    match = re.search(r';\s*boundary=(?:"([^"]+)"|([^;\s]+))', content_type, re.IGNORECASE)
    assert match, f"no boundary in {content_type!r}"
    return match.group(1) or match.group(2)


def parse_multipart(content_type, body):
    """[(part headers with lower-case names, part bytes)] of a multipart/related body.

    Strict on framing (RFC 2046 §5.1.1): the body is the delimiter-separated
    parts and the closing delimiter, nothing else but an optional final CRLF.
    """
    assert content_type.lower().startswith("multipart/related"), content_type
    delimiter = b"--" + boundary_of(content_type).encode()
    assert body.startswith(delimiter + b"\r\n"), body[:100]
    closing = b"\r\n" + delimiter + b"--"
    end = body.rfind(closing)
    assert end >= 0 and body[end + len(closing):] in (b"", b"\r\n"), body[-100:]
    parts = []
    for chunk in body[len(delimiter) + 2:end].split(b"\r\n" + delimiter + b"\r\n"):
        if chunk.startswith(b"\r\n"):  # a part without headers
            head, separator, data = b"", True, chunk[2:]
        else:
            head, separator, data = chunk.partition(b"\r\n\r\n")
        assert separator, f"a part without a header/body separator: {chunk[:100]!r}"
        headers = {}
        for line in filter(None, head.decode("latin-1").split("\r\n")):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


def multipart_parts(response):
    """The parts of a multipart response (see parse_multipart)."""
    return parse_multipart(response.headers.get("Content-Type", ""), response.content)


def referenced(body):
    """SOP Instance UIDs of a STOW response's ReferencedSOPSequence, in order."""
    return [item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])]


def failed(body):
    """(SOP Instance UID or None, FailureReason) of its FailedSOPSequence, in order."""
    return [((item["00081155"].get("Value") or [None])[0], item["00081197"]["Value"][0])
            for item in body.get("00081198", {}).get("Value", [])]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class DataDir:
    """A read-only look at a server's data dir: its index (the SQLite file, or on a
    PostgreSQL run the data dir's database) and the blob files."""

    def __init__(self, path):
        self.path = str(path)

    def select(self, sql, args=()):
        """The rows (tuples) of a query (``?`` marks) of the index, on either backend."""
        url = database_url(self.path)
        if url is not None:
            import psycopg

            from litevna.index.postgres import _psycopg_sql

            with psycopg.connect(url, autocommit=True) as db:
                return db.execute(_psycopg_sql(sql), args).fetchall()
        with contextlib.closing(sqlite3.connect(f"file:{self.path}/index.sqlite3?mode=ro",
                                                uri=True, timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    def rows(self, sop_uid):
        """[(label, blob_key, sha256)] of every store's instance with this SOP Instance UID."""
        return self.select("SELECT s.label, i.blob_key, i.sha256 FROM instances i "
                           "JOIN stores s ON s.id = i.store_id WHERE i.sop_instance_uid = ?",
                           (sop_uid,))

    def instances(self, label):
        """{sop_uid: (blob_key, sha256, size)} of a store."""
        return {sop: (key, digest, size) for sop, key, digest, size in self.select(
            "SELECT i.sop_instance_uid, i.blob_key, i.sha256, i.size FROM instances i "
            "JOIN stores s ON s.id = i.store_id WHERE s.label = ?", (label,))}

    def series(self, label):
        """{series UID: study UID} of a store's series rows."""
        return dict(self.select(
            "SELECT se.series_uid, st.study_uid FROM series se "
            "JOIN studies st ON st.id = se.study_pk "
            "JOIN stores s ON s.id = st.store_id WHERE s.label = ?", (label,)))

    def studies(self, label):
        """The Study Instance UIDs of a store's study rows."""
        return {uid for (uid,) in self.select(
            "SELECT st.study_uid FROM studies st JOIN stores s ON s.id = st.store_id "
            "WHERE s.label = ?", (label,))}

    def blob_path(self, key):
        return os.path.join(self.path, "blobs", key)

    def stored(self, label, sop_uid):
        """The stored bytes of an instance, or None."""
        rows = [row for row in self.rows(sop_uid) if row[0] == label]
        if not rows:
            return None
        with open(self.blob_path(rows[0][1]), "rb") as fp:
            return fp.read()

    def wait_staging_empty(self, timeout=5.0):
        """The staging folder's files once it is empty, or after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = os.listdir(os.path.join(self.path, "staging", socket.gethostname()))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)


def provision(data_dir, label, permissions=("read", "write", "delete"),
              owner="owner@example.org"):
    """Create store label (and its owner if needed) in data_dir; an API key value for it.

    In-process, through the same Accounts code as ``litevna admin`` (which costs a
    Python start-up per call).
    """
    from litevna.accounts import Accounts
    from litevna.service import open_backends

    index, keyring = open_backends(config(data_dir))
    try:
        accounts = Accounts(index, keyring, time.time)
        if index.account_by_email(owner) is None:
            accounts.create_account(owner, "correct horse battery")
        accounts.create_store(label, owner)
        return accounts.create_api_key(label, permissions=permissions)["value"]
    finally:
        index.close()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class InstanceUrls:
    """The DICOMweb URLs of a stored instance; the class has base, study, series, sop."""

    @property
    def study_url(self):
        return f"{self.base}/studies/{self.study}"

    @property
    def series_url(self):
        return f"{self.study_url}/series/{self.series}"

    @property
    def url(self):
        return f"{self.series_url}/instances/{self.sop}"


# The rendering oracle: what a frame should render as, from pydicom's own steps (PS3.3 C.11).

def frame_pixels(ds, index=0):
    """Frame index of ds as pydicom decodes it (YBR already turned into RGB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    return arr[index] if int(ds.get("NumberOfFrames") or 1) > 1 else arr


def windowing_range(ds):
    """The output range of pydicom's apply_windowing (its y_min, y_max)."""
    if ds.get("ModalityLUTSequence"):
        low, high = 0, 2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
    elif ds.PixelRepresentation == 0:
        low, high = 0, 2 ** ds.BitsStored - 1
    else:
        low, high = -(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        low = low * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        high = high * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return low, high


def render_oracle(ds, index=0, window=None):
    """The 8-bit image frame index of ds should render as; ``window`` (center, width)
    replaces the data set's window and VOI LUT, as ``?window=`` does."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    arr = frame_pixels(ds, index)
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        # PS3.3 C.7.6.3.1.5: 8- or 16-bit entries; 65535 / 255 = 257.
        return numpy.rint(rgb / (1 if rgb.dtype == numpy.uint8 else 257)).astype(numpy.uint8)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        maximum = 2 ** ds.BitsStored - 1
        return numpy.rint(arr.astype(numpy.float64) * 255 / maximum).astype(numpy.uint8)
    if window is not None:
        ds = ds.copy()
        ds.WindowCenter, ds.WindowWidth = window
        for keyword in ("VOILUTFunction", "VOILUTSequence"):
            if keyword in ds:
                delattr(ds, keyword)
    modality = apply_modality_lut(arr, ds).astype(numpy.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        low, high = windowing_range(ds)
        voi = apply_voi_lut(modality, ds, index=0, prefer_lut=False)
        grey = (voi - low) / (high - low) * 255
    elif ds.get("VOILUTSequence"):
        voi = apply_voi_lut(numpy.rint(modality).astype(numpy.int64), ds, index=0)
        grey = voi / (2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1) * 255
    else:
        low, high = modality.min(), modality.max()
        grey = (modality - low) / (high - low) * 255 if high > low else modality * 0
    grey = numpy.rint(numpy.clip(grey, 0, 255))
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return grey.astype(numpy.uint8)
