"""WADO-RS, DELETE and CORS against a real ``litevna serve`` (SPEC §4; PS3.18 §8.7, §10.4).

Every pydicom test file that STOW accepts is stored once into one module-scoped
server (files sharing a SOP Instance UID in stores of their own, as in
test_stow_http) and read back through every WADO-RS resource, parsed both by
dicomweb-client and by the strict parser of helpers.py for exact byte checks.
The oracles are pydicom's: the stored bytes, ``to_json_dict``, ``pixel_array``
and ``generate_frames``.
"""

import collections
import functools
import gzip
import io
import os
import re
import warnings
import zipfile

import numpy
import orjson
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_expected_length, pack_bits

import test_stow_http as stow  # the classification of pydicom's shipped files
from helpers import (
    DICOM, DataDir, InstanceUrls, bearer, dataset, get, multipart, multipart_parts,
    multipart_type, new_uid,
    part10, post, provision, referenced, request,
)
from litevna.http.headers import MediaTypeError, parse_accept

pytestmark = pytest.mark.usefixtures("server_log_is_clean")

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
MULTIPART_DICOM = f'multipart/related; type="{DICOM}"'
AS_STORED = f"{MULTIPART_DICOM}; transfer-syntax=*"
FRAMES_AS_STORED = f'multipart/related; type="{OCTET}"; transfer-syntax=*'
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
TRAILING_PADDING = 0xFFFCFFFC  # PS3.10 §7.2: no meaning; ingest reads up to the pixels only
B = "wado-test-boundary"

GOOD = sorted(stow.LAYERS)
RAW = stow._RAW




@functools.lru_cache(maxsize=None)
def full(name):
    """The whole data set of a shipped file (pixels included), read once."""
    return stow._read(name)


@functools.lru_cache(maxsize=None)
def pixels(name):
    """pydicom's pixel_array of a shipped file, or None if it cannot decode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return full(name).pixel_array
        except Exception:  # noqa: BLE001 - whatever pydicom raises, the oracle cannot decode
            return None


def has_pixels(ds):
    return any(tag in ds for tag in PIXEL_TAGS)


def pixel_element(ds):
    return next(ds[tag] for tag in PIXEL_TAGS if tag in ds)


def number_of_frames(ds):
    return int(ds.get("NumberOfFrames") or 1)


def encapsulated(ts):
    return pydicom.uid.UID(ts).is_compressed


HEADERS = {name: stow._read(name, stop_before_pixels=True) for name in GOOD}
TS = {name: str(HEADERS[name].file_meta.TransferSyntaxUID) for name in GOOD}
PIXEL = [name for name in GOOD if has_pixels(full(name))]
MULTIFRAME = [name for name in PIXEL if number_of_frames(full(name)) >= 3]


def label_of(name):
    return f"files-{stow.LAYERS[name]}"


class Stored(InstanceUrls):
    """One stored instance: where it is and how to reach it."""

    def __init__(self, base, headers, study, series, sop, raw=None, ts=None, name=None):
        self.base, self.headers = base, headers
        self.study, self.series, self.sop = study, series, sop
        self.raw, self.ts, self.name = raw, ts, name

    def h(self, **extra):
        """The store's Authorization plus extra headers (underscores read as dashes)."""
        return {**self.headers, **{k.replace("_", "-"): v for k, v in extra.items()}}

    def client(self):
        return DICOMwebClient(url=self.base, headers=self.headers)


def _groups():
    """(level, label, study[, series]) → the good files in it."""
    groups = collections.defaultdict(list)
    for name in GOOD:
        ds = HEADERS[name]
        study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        groups[("study", label_of(name), study)].append(name)
        groups[("series", label_of(name), study, series)].append(name)
    return dict(groups)


GROUPS = _groups()


def _group_id(key):
    return f"{key[0]}-{key[1]}-{key[-1][-16:]}"


@pytest.fixture(scope="module")
def shipped(server):
    """name → Stored, for every shipped file that STOW accepts, stored once."""
    out = {}
    for layer in sorted(set(stow.LAYERS.values())):
        label = f"files-{layer}"
        headers = bearer(provision(server.data_dir, label))
        names = [name for name in GOOD if stow.LAYERS[name] == layer]
        response = post(f"{server.url}/{label}/dicomweb/studies",
                        multipart([RAW[name] for name in names], B), multipart_type(B), headers)
        assert response.status_code == 200, response.text
        sops = [str(HEADERS[name].SOPInstanceUID) for name in names]
        assert sorted(referenced(response.json())) == sorted(sops)
        for name in names:
            ds = HEADERS[name]
            out[name] = Stored(f"{server.url}/{label}/dicomweb", headers,
                               str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                               str(ds.SOPInstanceUID), RAW[name], TS[name], name)
    return out


def store(server, *datasets, key="all"):
    """STOW data sets into the provisioned "demo" store; a Stored for each."""
    headers = server.provisioned.headers(key)
    bodies = [part10(ds) for ds in datasets]
    response = post(f"{server.url}/demo/dicomweb/studies", multipart(bodies, B),
                    multipart_type(B), headers)
    assert response.status_code == 200, response.text
    return [Stored(f"{server.url}/demo/dicomweb", headers, str(ds.StudyInstanceUID),
                   str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), body,
                   str(ds.file_meta.TransferSyntaxUID))
            for ds, body in zip(datasets, bodies)]


def syntax_of(content_type):
    match = re.search(r"transfer-syntax=\"?([^\";\s]+)", content_type)
    return match.group(1) if match else None


def error_json(response, status):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == status and body["error"], body
    return body


# --- 1. retrieve: the stored bytes, byte-identical --------------------------------------------

@pytest.mark.parametrize("name", GOOD)
def test_instance_round_trip(shipped, http, name):
    item = shipped[name]
    response = get(item.url, item.h(Accept=DICOM), http)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(DICOM)
    assert response.content == item.raw

    response = get(item.url, item.h(Accept=AS_STORED), http)
    assert response.status_code == 200, response.text
    [(headers, data)] = multipart_parts(response)
    assert data == item.raw
    assert headers["content-type"].startswith(DICOM)
    assert syntax_of(headers["content-type"]) == item.ts

    ds = item.client().retrieve_instance(item.study, item.series, item.sop,
                                         media_types=((DICOM, "*"),))
    assert ds.SOPInstanceUID == item.sop
    assert ds.file_meta.TransferSyntaxUID == item.ts


def _expected_raws(group):
    """{SOP Instance UID: stored bytes} of a group (one content per UID and store)."""
    return {str(HEADERS[name].SOPInstanceUID): RAW[name] for name in GROUPS[group]}


def _group_url(shipped, group):
    item = shipped[GROUPS[group][0]]
    return item, item.study_url if group[0] == "study" else item.series_url


@pytest.mark.parametrize("group", list(GROUPS), ids=_group_id)
def test_series_and_study_round_trip(shipped, http, group):
    item, url = _group_url(shipped, group)
    expected = _expected_raws(group)
    response = get(url, item.h(Accept=AS_STORED), http)
    assert response.status_code == 200, response.text
    parts = multipart_parts(response)
    assert sorted(data for _, data in parts) == sorted(expected.values())
    by_bytes = {RAW[name]: TS[name] for name in GROUPS[group]}
    for headers, data in parts:
        assert syntax_of(headers["content-type"]) == by_bytes[data]

    client = item.client()
    if group[0] == "study":
        datasets = client.retrieve_study(item.study, media_types=((DICOM, "*"),))
    else:
        datasets = client.retrieve_series(item.study, item.series, media_types=((DICOM, "*"),))
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(expected)


# --- 2. the default transfer syntax -----------------------------------------------------------

def _json_without_pixels(ds):
    """ds's DICOM JSON less pixel data, File Meta, padding and the retired group lengths
    (gggg,0000) that a writer may drop (PS3.5 §7.2)."""
    document = ds.to_json_dict(1024, lambda element: "bulk")
    return {tag: value for tag, value in document.items()
            if int(tag, 16) not in PIXEL_TAGS and int(tag, 16) >> 16 != 2
            and int(tag, 16) != TRAILING_PADDING and int(tag, 16) & 0xFFFF != 0}


def _check_converted(name, data):
    original = full(name)
    converted = pydicom.dcmread(io.BytesIO(data))
    assert converted.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert converted.SOPInstanceUID == original.SOPInstanceUID
    if has_pixels(original):
        assert numpy.array_equal(converted.pixel_array, pixels(name))
    if not encapsulated(TS[name]):
        assert _json_without_pixels(converted) == _json_without_pixels(original)


def _decodable(name):
    return not has_pixels(full(name)) or pixels(name) is not None


@pytest.mark.parametrize("name", GOOD)
def test_default_transfer_syntax(shipped, http, name):
    """No transfer-syntax: Explicit VR Little Endian when decodable, else 406 (SPEC §4)."""
    item = shipped[name]
    multipart_response = get(item.url, item.h(Accept=MULTIPART_DICOM), http)
    part10_response = get(item.url, item.h(Accept=f"{DICOM}; transfer-syntax={EXPLICIT_LE}"),
                          http)
    if item.ts == EXPLICIT_LE:
        assert [data for _, data in multipart_parts(multipart_response)] == [item.raw]
        assert part10_response.content == item.raw
        return
    if not _decodable(name):
        error_json(multipart_response, 406)
        error_json(part10_response, 406)
        return
    assert multipart_response.status_code == 200, multipart_response.text
    [(headers, data)] = multipart_parts(multipart_response)
    assert syntax_of(headers["content-type"]) == EXPLICIT_LE
    _check_converted(name, data)
    assert part10_response.status_code == 200, part10_response.text
    _check_converted(name, part10_response.content)
    # dicomweb-client asking for Explicit VR Little Endian by name
    ds = item.client().retrieve_instance(item.study, item.series, item.sop,
                                         media_types=((DICOM, EXPLICIT_LE),))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    if has_pixels(ds):
        assert numpy.array_equal(ds.pixel_array, pixels(name))


@pytest.mark.parametrize("accept", [
    f"{MULTIPART_DICOM}; transfer-syntax={JPEG_BASELINE}",
    f"{MULTIPART_DICOM}; transfer-syntax={IMPLICIT_LE}",
    f"{DICOM}; transfer-syntax={JPEG_BASELINE}",
])
def test_other_specific_syntax_is_406(shipped, http, accept):
    item = shipped["CT_small.dcm"]
    error_json(get(item.url, item.h(Accept=accept), http), 406)
    if accept.startswith("multipart"):
        error_json(get(item.study_url, item.h(Accept=accept), http), 406)


# --- 3. ZIP -----------------------------------------------------------------------------------

@pytest.mark.parametrize("group", list(GROUPS), ids=_group_id)
def test_zip(shipped, http, group):
    item, url = _group_url(shipped, group)
    response = get(url, item.h(Accept="application/zip"), http)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert len(set(names)) == len(names)
        members = [archive.read(n) for n in names]
    assert sorted(members) == sorted(_expected_raws(group).values())


# --- 4. metadata ------------------------------------------------------------------------------

PIXEL_BULK = "pixel data"


def expected_metadata(ds):
    """(pydicom's DICOM JSON as the server should give it, {marker: the bulk data})."""
    bulk = {}

    def handler(element):
        marker = f"bulk:{len(bulk)}"
        bulk[marker] = element.value
        return marker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=handler)
    out = {}
    for key, value in document.items():
        tag = int(key, 16)
        if tag >> 16 == 2 or tag == TRAILING_PADDING:
            continue
        if tag in PIXEL_TAGS:  # always by reference, however small (SPEC §4)
            value = {"vr": str(value["vr"]), "BulkDataURI": PIXEL_BULK}
        out[key] = value
    return _without_empty_sequence_values(out), bulk


def _without_empty_sequence_values(document):
    """pydicom writes an empty sequence as "Value": []; PS3.18 §F.2.2 (and the server, as
    test_jsonmodel pins down) leaves an empty value out."""
    if isinstance(document, dict):
        if document.get("vr") == "SQ" and document.get("Value") == []:
            return {"vr": "SQ"}
        return {k: _without_empty_sequence_values(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_without_empty_sequence_values(v) for v in document]
    return document


def with_markers(got, expected, found):
    """got with each BulkDataURI that expected has at the same place replaced by its marker."""
    if isinstance(got, dict) and isinstance(expected, dict):
        if "BulkDataURI" in got and "BulkDataURI" in expected:
            found.append((got["BulkDataURI"], expected["BulkDataURI"]))
            return {**got, "BulkDataURI": expected["BulkDataURI"]}
        return {k: with_markers(v, expected.get(k), found) for k, v in got.items()}
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        return [with_markers(g, e, found) for g, e in zip(got, expected)]
    return got


def bulk_uris(document):
    if isinstance(document, dict):
        if "BulkDataURI" in document:
            yield document["BulkDataURI"]
        for value in document.values():
            yield from bulk_uris(value)
    elif isinstance(document, list):
        for value in document:
            yield from bulk_uris(value)


def expected_pixel_bulk(ds, ts):
    """The bulk data of the pixel element: its value, or the frames when encapsulated."""
    if encapsulated(ts):
        return list(generate_frames(pixel_element(ds).value, number_of_frames=number_of_frames(ds)))
    return pixel_element(ds).value


def check_bulk_data(item, http, ds, document, expected, bulk):
    if encapsulated(item.ts):
        # PS3.5 §A.4 says OB; a file that declares OW keeps it (pydicom reports OB either way)
        for key in {f"{tag:08X}" for tag in PIXEL_TAGS} & set(document) & set(expected):
            if document[key].get("vr") in ("OB", "OW"):
                expected[key]["vr"] = document[key]["vr"]
    found = []
    assert with_markers(document, expected, found) == expected
    uris = list(bulk_uris(document))
    for uri in uris:
        assert uri.startswith(item.url + "/bulkdata/"), uri
    for uri, marker in found:
        if marker == PIXEL_BULK:
            want = expected_pixel_bulk(ds, item.ts)
        else:
            want = bulk[marker]
        if isinstance(want, list):  # frames: a multipart body
            response = get(uri, item.h(Accept=FRAMES_AS_STORED), http)
            assert response.status_code == 200, (uri, response.text)
            assert [data for _, data in multipart_parts(response)] == want, uri
        else:
            response = get(uri, item.h(Accept=OCTET), http)
            assert response.status_code == 200, (uri, response.text)
            assert response.content == want, (uri, len(response.content), len(want))
    for uri in set(uris) - {uri for uri, _ in found}:
        assert get(uri, item.h(), http).status_code == 200, uri


@pytest.mark.parametrize("name", GOOD)
def test_instance_metadata(shipped, http, name):
    item = shipped[name]
    response = get(item.url + "/metadata", item.h(Accept=DICOM_JSON), http)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == DICOM_JSON
    assert response.headers.get("ETag")
    [document] = response.json()
    ds = full(name)
    expected, bulk = expected_metadata(ds)
    check_bulk_data(item, http, ds, document, expected, bulk)
    got = item.client().retrieve_instance_metadata(item.study, item.series, item.sop)
    assert client_view(got, item) == document


def client_view(document, item):
    """document as fetched by dicomweb-client, whose GETs send ``Host`` without the port:
    the server builds BulkDataURIs from that Host, so they lack the port."""
    text = orjson.dumps(document).decode()
    host = re.match(r"https?://([^/:]+)", item.base).group(1)
    without_port = re.sub(r"^(https?://[^/:]+):\d+", r"\1", item.base)
    assert f'"{item.base}/' not in text or without_port == item.base, host
    return orjson.loads(text.replace(f'"{without_port}/', f'"{item.base}/'))


@pytest.mark.parametrize("group", list(GROUPS), ids=_group_id)
def test_series_and_study_metadata(shipped, http, group):
    item, url = _group_url(shipped, group)
    response = get(url + "/metadata", item.h(Accept=DICOM_JSON), http)
    assert response.status_code == 200, response.text
    documents = response.json()
    by_sop = {d["00080018"]["Value"][0]: d for d in documents}
    assert len(by_sop) == len(documents)
    assert sorted(by_sop) == sorted(_expected_raws(group))
    for name in GROUPS[group]:
        one = shipped[name]
        [document] = get(one.url + "/metadata", one.h(Accept=DICOM_JSON), http).json()
        assert by_sop[one.sop] == document
    client = item.client()
    if group[0] == "study":
        assert client_view(client.retrieve_study_metadata(item.study), item) == documents
    else:
        assert client_view(client.retrieve_series_metadata(item.study, item.series),
                           item) == documents


def test_metadata_of_elements_after_the_pixel_data(server, http):
    """Private groups after (7FE0,0010) (Siemens 7FE1, GE 7FD1...) are metadata too."""
    ds = dataset()
    ds.add_new(0x7FE10010, "LO", "LITEVNA TEST")
    ds.add_new(0x7FE11010, "LO", "after the pixels")
    ds.add_new(0x7FE11020, "OB", bytes(range(256)) * 8)
    [item] = store(server, ds)
    [document] = get(item.url + "/metadata", item.h(Accept=DICOM_JSON), http).json()
    check_bulk_data(item, http, ds, document, *expected_metadata(ds))


def _metadata(item, http, url, **headers):
    return get(url + "/metadata", item.h(Accept=DICOM_JSON, **headers), http)


def test_metadata_gzip_etag_and_304(server, http):
    study = new_uid()
    first = dataset(study_uid=study)
    [a] = store(server, first)
    urls = {"study": a.study_url, "series": a.series_url, "instance": a.url}
    etags = {}
    for level, url in urls.items():
        plain = _metadata(a, http, url, Accept_Encoding="identity")
        assert plain.status_code == 200, plain.text
        assert "Content-Encoding" not in plain.headers
        etag = etags[level] = plain.headers["ETag"]
        assert re.fullmatch(r'(W/)?"[^"]+"', etag), etag

        zipped = get(url + "/metadata", a.h(Accept=DICOM_JSON, Accept_Encoding="gzip"), http,
                     stream=True)
        raw = zipped.raw.read(decode_content=False)
        assert zipped.status_code == 200
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(raw) == plain.content
        assert zipped.headers["ETag"] != etag  # another representation, another tag

        for match in (etag, f'"not-it", {etag}'):
            not_modified = _metadata(a, http, url, Accept_Encoding="identity",
                                     If_None_Match=match)
            assert not_modified.status_code == 304, match
            assert not_modified.content == b""
            assert not_modified.headers["ETag"] == etag
        zipped_304 = _metadata(a, http, url, Accept_Encoding="gzip",
                               If_None_Match=zipped.headers["ETag"])
        assert zipped_304.status_code == 304 and zipped_304.content == b""
        assert _metadata(a, http, url, Accept_Encoding="identity",
                         If_None_Match='"something else"').status_code == 200

    [b] = store(server, dataset(study_uid=study, series_uid=first.SeriesInstanceUID))
    for level, url in urls.items():
        response = _metadata(a, http, url, Accept_Encoding="identity",
                             If_None_Match=etags[level])
        if level == "instance":
            assert response.status_code == 304  # that instance did not change
            continue
        assert response.status_code == 200, level
        assert response.headers["ETag"] != etags[level]
        assert {d["00080018"]["Value"][0] for d in response.json()} == {a.sop, b.sop}


# --- 5. frames --------------------------------------------------------------------------------

def native_frames(ds):
    """Each frame's bytes as stored: consecutive slices of the pixel data (PS3.5 §8.1.1)."""
    n = number_of_frames(ds)
    size = get_expected_length(ds, "bytes") // n
    value = pixel_element(ds).value
    return [value[k * size:(k + 1) * size] for k in range(n)]


def little_endian_frames(name):
    """Each frame's pixels as Explicit VR Little Endian bytes, from pydicom's pixel_array."""
    ds, array = full(name), pixels(name)
    n = number_of_frames(ds)
    frames = [array] if n == 1 else list(array)
    out = []
    for frame in frames:
        if not encapsulated(TS[name]):  # native: the stored layout, in little endian
            if ds.BitsAllocated == 1:
                out.append(pack_bits(frame))
                continue
            if int(ds.get("SamplesPerPixel", 1)) > 1 and ds.get("PlanarConfiguration") == 1:
                frame = frame.transpose(2, 0, 1)
        frame = numpy.ascontiguousarray(frame)
        out.append(frame.astype(frame.dtype.newbyteorder("<")).tobytes())
    return out


def frames_as_stored(name):
    ds = full(name)
    if TS[name] == DEFLATED:  # the stored bytes are one deflate stream: decoded instead
        return little_endian_frames(name), EXPLICIT_LE
    if encapsulated(TS[name]):
        return expected_pixel_bulk(ds, TS[name]), TS[name]
    return native_frames(ds), TS[name]


def frame_list(n):
    return ",".join(str(k) for k in range(1, n + 1))


@pytest.mark.parametrize("name", PIXEL)
def test_frames_as_stored(shipped, http, name):
    item = shipped[name]
    expected, syntax = frames_as_stored(name)
    url = f"{item.url}/frames/{frame_list(len(expected))}"
    response = get(url, item.h(Accept=FRAMES_AS_STORED), http)
    assert response.status_code == 200, response.text
    parts = multipart_parts(response)
    assert [data for _, data in parts] == expected
    for headers, _ in parts:
        assert syntax_of(headers["content-type"]) == syntax, headers
    got = item.client().retrieve_instance_frames(
        item.study, item.series, item.sop, frame_numbers=list(range(1, len(expected) + 1)),
        media_types=((OCTET, "*"),))
    assert got == expected


@pytest.mark.parametrize("name", PIXEL)
def test_frames_without_transfer_syntax(shipped, http, name):
    """type=application/octet-stream alone: Explicit VR Little Endian pixels (PS3.18 §8.7.3)."""
    item = shipped[name]
    n = number_of_frames(full(name))
    url = f"{item.url}/frames/{frame_list(n)}"
    response = get(url, item.h(Accept=f'multipart/related; type="{OCTET}"'), http)
    if encapsulated(item.ts) and pixels(name) is None:
        error_json(response, 406)  # cannot be decoded: not a 200 cut short
        return
    if item.ts in (EXPLICIT_LE, IMPLICIT_LE):
        expected = native_frames(full(name))
    else:  # compressed, deflated or big endian: decoded / swapped
        expected = little_endian_frames(name)
    assert response.status_code == 200, response.text
    parts = multipart_parts(response)
    assert [data for _, data in parts] == expected
    for headers, _ in parts:
        assert syntax_of(headers["content-type"]) == EXPLICIT_LE, headers


@pytest.mark.parametrize("name", MULTIFRAME + ["multi-frame CT"])
def test_frame_lists_in_order(server, shipped, http, name):
    if name == "multi-frame CT":
        ds = dataset(frames=4, rows=8, columns=8)
        [item] = store(server, ds)
        expected = native_frames(ds)
    else:
        item = shipped[name]
        expected, _ = frames_as_stored(name)
    for listing in ("1,3,2", "3,1", "2", f"{len(expected)},1"):
        response = get(f"{item.url}/frames/{listing}", item.h(Accept=FRAMES_AS_STORED), http)
        assert response.status_code == 200, response.text
        assert [data for _, data in multipart_parts(response)] == \
            [expected[int(k) - 1] for k in listing.split(",")], listing


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_jpeg_gdcm.dcm", "rtdose.dcm"])
def test_singular_frame_path_is_the_same_resource(shipped, http, name):
    item = shipped[name]
    for k in (1, number_of_frames(full(name))):
        plural = get(f"{item.url}/frames/{k}", item.h(Accept=FRAMES_AS_STORED), http)
        singular = get(f"{item.url}/frame/{k}", item.h(Accept=FRAMES_AS_STORED), http)
        assert plural.status_code == singular.status_code == 200
        assert [d for _, d in multipart_parts(plural)] == [d for _, d in multipart_parts(singular)]


@pytest.mark.parametrize("listing,status", [
    ("0", 400), ("1,0", 400), ("abc", 400), ("1,,2", 400), (",1", 400), ("1,", 400),
    ("-1", 400), ("1.5", 400), ("1;2", 400), ("%20", 400),
    ("2", 404), ("1,2", 404), ("99999999999999999999", 404),
])
def test_bad_frame_numbers(shipped, http, listing, status):
    item = shipped["CT_small.dcm"]  # one frame
    for path in ("frames", "frame"):
        error_json(get(f"{item.url}/{path}/{listing}", item.h(Accept=FRAMES_AS_STORED), http),
                   status)


def test_frames_of_an_instance_without_pixels(shipped, http):
    item = shipped["rtplan.dcm"]
    error_json(get(f"{item.url}/frames/1", item.h(Accept=FRAMES_AS_STORED), http), 404)


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_dicomweb_client_default_frame_request(shipped, name):
    """retrieve_instance_frames without media_types sends type="*/*": frames as stored."""
    item = shipped[name]
    expected, _ = frames_as_stored(name)
    assert item.client().retrieve_instance_frames(item.study, item.series, item.sop,
                                                  frame_numbers=[1]) == expected[:1]


# --- 6. Accept negotiation --------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_accept_raises_only_media_type_error(value):
    try:
        ranges = parse_accept(value)
    except MediaTypeError:
        return
    assert all(0 < r.q <= 1 for r in ranges)
    assert [r.q for r in ranges] == sorted((r.q for r in ranges), reverse=True)


_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+.^_`|~-"
_tokens = st.text(_TOKEN_CHARS, min_size=1, max_size=8)
_types = st.one_of(
    st.sampled_from(["*/*", "multipart/related", "application/dicom", "application/zip",
                     "application/octet-stream", "image/*", "multipart/*", "image/jpeg"]),
    st.builds(lambda a, b: f"{a}/{b}", _tokens, _tokens))
_names = _tokens.filter(lambda name: name != "q")
_values = st.one_of(
    st.sampled_from(["application/dicom", "*", "1.2.840.10008.1.2.1", "application/dicom+json"]),
    _tokens, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12))
_spaces = st.sampled_from(["", " ", "  ", "\t"])
_qs = st.sampled_from(["1", "1.0", "1.000", "0.9", "0.5", "0.123", "0.05", "0.001", "0", "0.0"])


@st.composite
def _accept_lists(draw):
    """(header text, [(type, params, q)]) of a well-formed Accept (RFC 9110 §12.5.1)."""
    entries, texts = [], []
    for _ in range(draw(st.integers(1, 5))):
        media_type = draw(_types)
        params = draw(st.dictionaries(_names, _values, max_size=3))
        q = draw(st.none() | _qs)
        text = media_type
        for name, value in params.items():
            quoted = draw(st.booleans()) or not re.fullmatch(r"[^;\"\s,\\]+", value)
            if quoted:
                value_text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                value_text = value
            text += f"{draw(_spaces)};{draw(_spaces)}{name}={value_text}"
        if q is not None:
            text += f"{draw(_spaces)};{draw(_spaces)}q={q}"
        texts.append(text)
        entries.append((media_type, {k.lower(): v for k, v in params.items()},
                        float(q) if q is not None else 1.0))
    separators = [f"{draw(_spaces)},{draw(_spaces)}" for _ in texts[1:]] + [""]
    return "".join(t + s for t, s in zip(texts, separators)), entries


@settings(max_examples=400, deadline=None)
@given(_accept_lists())
@example(("application/dicom;q=0", [("application/dicom", {}, 0.0)]))
@example(('a/b; x="1,2;\\"q=0.5", c/d;q=0.5, e/f',
          [("a/b", {"x": '1,2;"q=0.5'}, 1.0), ("c/d", {}, 0.5), ("e/f", {}, 1.0)]))
def test_parse_accept_sorts_well_formed_lists_by_q(case):
    text, entries = case
    # q=0 means "not acceptable" (RFC 9110 §12.4.2): left out, and a list refusing
    # everything is still well-formed (the request gets a 406, see test_retrieve_accept)
    wanted = sorted([e for e in entries if e[2] > 0], key=lambda e: -e[2])
    got = parse_accept(text)
    assert [(r.type, r.params, r.q) for r in got] == wanted


def test_parse_accept_examples():
    [r] = parse_accept('multipart/related; type=application/octet-stream; transfer-syntax=*')
    assert (r.type, r.params) == ("multipart/related",
                                  {"type": "application/octet-stream", "transfer-syntax": "*"})
    got = parse_accept('application/zip;q=0.5, multipart/related;type="application/dicom";'
                       'transfer-syntax=*;q=0.9, */*;q=0.1')
    assert [(r.type, r.q) for r in got] == [("multipart/related", 0.9),
                                            ("application/zip", 0.5), ("*/*", 0.1)]
    assert [r.type for r in parse_accept(None)] == ["*/*"]
    assert [r.type for r in parse_accept(b"")] == ["*/*"]


def _retrieve_cases():
    """Accept → what an instance retrieve answers: multipart, part10, zip, 400 or 406."""
    return {
        "*/*": "multipart",
        "multipart/related; type=application/dicom; transfer-syntax=*": "multipart",
        'multipart/related; type="application/dicom"; transfer-syntax="*"': "multipart",
        'Multipart/Related; Type="Application/DICOM"; transfer-syntax=*': "multipart",
        "multipart/*": "multipart",
        f"application/zip;q=0.5, {AS_STORED};q=0.9": "multipart",
        f"{AS_STORED};q=0.1, application/zip": "zip",
        "text/html, application/dicom;q=0.8": "part10",
        "application/dicom": "part10",
        "Application/DICOM": "part10",
        "application/zip": "zip",
        "image/png": 406,
        'multipart/related; type="application/dicom+json"': 406,
        "application/dicom;q=0": 406,
        "application/dicom;q=0, application/zip;q=0": 406,
        'multipart/related; type="application/dicom': 400,
        "not a media type": 400,
        ";;;": 400,
        "application/dicom; q=abc": 400,
        "application/dicom; q=2": 400,
        "application/dicom; =x": 400,
        "application/dicom; transfer-syntax": 400,
        "application/dicom, /": 400,
    }


RETRIEVE_CASES = _retrieve_cases()


@pytest.mark.parametrize("accept", list(RETRIEVE_CASES))
def test_retrieve_accept(shipped, http, accept):
    item = shipped["CT_small.dcm"]
    expected = RETRIEVE_CASES[accept]
    response = get(item.url, item.h(Accept=accept), http)
    if isinstance(expected, int):
        error_json(response, expected)
        return
    assert response.status_code == 200, response.text
    if expected == "multipart":
        assert [d for _, d in multipart_parts(response)] == [item.raw]
    elif expected == "part10":
        assert response.content == item.raw
    else:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert [archive.read(n) for n in archive.namelist()] == [item.raw]


def test_accept_query_parameter_overrides_the_header(shipped, http):
    item = shipped["CT_small.dcm"]
    response = get(item.url, item.h(Accept="image/png"), http, params={"accept": DICOM})
    assert response.status_code == 200 and response.content == item.raw


def test_application_dicom_is_instance_level_only(shipped, http):
    item = shipped["CT_small.dcm"]
    for url in (item.study_url, item.series_url):
        error_json(get(url, item.h(Accept=DICOM), http), 406)


@pytest.mark.parametrize("accept,status", [
    (DICOM_JSON, 200), ("application/json", 200), ("*/*", 200), ("application/*", 200),
    (f"text/html, {DICOM_JSON};q=0.2", 200), (None, 200),
    ("application/dicom+xml", 406), ('multipart/related; type="application/dicom+xml"', 406),
    ("image/jpeg", 406), ("application/dicom+json; q=x", 400),
])
def test_metadata_accept(shipped, http, accept, status):
    item = shipped["CT_small.dcm"]
    headers = item.h() if accept is None else item.h(Accept=accept)
    response = get(item.url + "/metadata", headers, http)
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()[0]["00080018"]["Value"] == [item.sop]
    else:
        error_json(response, status)


@pytest.mark.parametrize("name,accept,status", [
    ("CT_small.dcm", "multipart/related; type=application/octet-stream; transfer-syntax=*", 200),
    ("CT_small.dcm", f'multipart/related; type="{OCTET}"', 200),
    ("CT_small.dcm", f'multipart/related; type="{OCTET}"; transfer-syntax={EXPLICIT_LE}', 200),
    ("CT_small.dcm", "*/*", 200),
    ("CT_small.dcm", f"image/png, {FRAMES_AS_STORED};q=0.5", 200),
    ("CT_small.dcm", 'multipart/related; type="image/jpeg"', 406),
    ("CT_small.dcm", f'multipart/related; type="{OCTET}"; transfer-syntax={JPEG_BASELINE}', 406),
    ("CT_small.dcm", "image/png", 406),
    ("CT_small.dcm", f"{FRAMES_AS_STORED}; q=1.5", 400),
    ("SC_rgb_jpeg_gdcm.dcm", 'multipart/related; type="image/jpeg"', 200),
    ("SC_rgb_jpeg_gdcm.dcm", "multipart/related; type=application/octet-stream; "
                             "transfer-syntax=*", 200),
    ("SC_rgb_jpeg_gdcm.dcm", 'multipart/related; type="image/jp2"', 406),
])
def test_frames_accept(shipped, http, name, accept, status):
    item = shipped[name]
    response = get(f"{item.url}/frames/1", item.h(Accept=accept), http)
    if status != 200:
        error_json(response, status)
        return
    assert response.status_code == 200, response.text
    [(headers, data)] = multipart_parts(response)
    assert syntax_of(headers["content-type"]) is not None
    if syntax_of(headers["content-type"]) == item.ts:
        assert data == frames_as_stored(name)[0][0]


# --- 7. bulk data and Range -------------------------------------------------------------------

def _range_cases(size):
    return [("bytes=0-9", 0, 10), ("bytes=-5", size - 5, 5), ("bytes=100-", 100, size - 100),
            (f"bytes=10-{size + 1000}", 10, size - 10), ("bytes=7-7", 7, 1),
            (f"bytes=-{size + 10}", 0, size)]


@pytest.mark.parametrize("name,tag", [("CT_small.dcm", "7FE00010"),
                                      ("examples_overlay.dcm", "60003000")])
def test_bulk_data_range(shipped, http, name, tag):
    item = shipped[name]
    value = full(name)[int(tag, 16)].value
    size = len(value)
    url = f"{item.url}/bulkdata/{tag}"
    whole = get(url, item.h(Accept=OCTET), http)
    assert whole.status_code == 200 and whole.content == value
    assert whole.headers["Content-Type"] == OCTET
    assert whole.headers.get("Accept-Ranges") == "bytes"
    for header, start, length in _range_cases(size):
        response = get(url, item.h(Accept=OCTET, Range=header), http)
        assert response.status_code == 206, (header, response.text)
        assert response.headers["Content-Range"] == \
            f"bytes {start}-{start + length - 1}/{size}", header
        assert response.content == value[start:start + length], header
    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        response = get(url, item.h(Accept=OCTET, Range=header), http)
        assert response.status_code == 416, (header, response.status_code, response.content[:80])
        assert response.headers["Content-Range"] == f"bytes */{size}", header


def test_bulk_data_as_multipart(shipped, http):
    item = shipped["CT_small.dcm"]
    url = f"{item.url}/bulkdata/7FE00010"
    for accept in (None, f'multipart/related; type="{OCTET}"'):
        response = get(url, item.h() if accept is None else item.h(Accept=accept), http)
        assert response.status_code == 200, response.text
        [(headers, data)] = multipart_parts(response)
        assert data == full("CT_small.dcm").PixelData
        assert syntax_of(headers["content-type"]) == EXPLICIT_LE
    error_json(get(url, item.h(Accept="image/png"), http), 406)


@pytest.mark.parametrize("tag_path", ["00100010", "7FE00011", "00081140/0/00081155",
                                      "60003000/99/00100010", "../../etc/passwd", "zzzz"])
def test_bulk_data_that_does_not_exist(shipped, http, tag_path):
    item = shipped["examples_overlay.dcm"]
    response = get(f"{item.url}/bulkdata/{tag_path}", item.h(Accept=OCTET), http)
    assert response.status_code == 404, response.text


# --- 8. DELETE --------------------------------------------------------------------------------

def _resource_urls(item):
    return {"instance": (item.url, AS_STORED), "part10": (item.url, DICOM),
            "metadata": (item.url + "/metadata", DICOM_JSON),
            "frames": (item.url + "/frames/1", FRAMES_AS_STORED),
            "bulkdata": (item.url + "/bulkdata/7FE00010", OCTET)}


def _assert_gone(item, http, data):
    for what, (url, accept) in _resource_urls(item).items():
        response = get(url, item.h(Accept=accept), http)
        assert response.status_code == 404, (what, response.status_code)
    assert data.rows(item.sop) == []


def _assert_present(item, http):
    for what, (url, accept) in _resource_urls(item).items():
        assert get(url, item.h(Accept=accept), http).status_code == 200, what


def _delete(url, headers, http):
    return request("DELETE", url, headers, http)


def _blob(data, item):
    [(_, key, _)] = data.rows(item.sop)
    path = data.blob_path(key)
    assert os.path.exists(path)
    return path


def test_delete_instance_then_series_then_study(server, http):
    data = DataDir(server.data_dir)
    study = new_uid()
    series_a, series_b = study + ".1", study + ".2"
    a1, a2, b1 = store(server, dataset(study_uid=study, series_uid=series_a),
                       dataset(study_uid=study, series_uid=series_a),
                       dataset(study_uid=study, series_uid=series_b, frames=2))
    blobs = {item.sop: _blob(data, item) for item in (a1, a2, b1)}
    headers = server.provisioned.headers()

    response = _delete(a1.url, headers, http)
    assert response.status_code == 204, response.text
    assert response.content == b""
    _assert_gone(a1, http, data)
    assert not os.path.exists(blobs[a1.sop])
    assert _delete(a1.url, headers, http).status_code == 404
    _assert_present(a2, http)
    [document] = get(a1.series_url + "/metadata", a2.h(Accept=DICOM_JSON), http).json()
    assert document["00080018"]["Value"] == [a2.sop]
    assert series_a in data.series("demo")

    # the last instance of a series: the series goes with it, the study stays
    assert _delete(a2.url, headers, http).status_code == 204
    _assert_gone(a2, http, data)
    assert series_a not in data.series("demo")
    assert data.series("demo")[series_b] == study
    for url in (a2.series_url, a2.series_url + "/metadata"):
        assert get(url, a2.h(Accept="*/*"), http).status_code == 404
    assert _delete(a2.series_url, headers, http).status_code == 404

    assert _delete(b1.series_url, headers, http).status_code == 204
    _assert_gone(b1, http, data)
    assert not os.path.exists(blobs[b1.sop])
    assert series_b not in data.series("demo")
    assert study not in data.studies("demo")
    for url in (b1.study_url, b1.study_url + "/metadata"):
        assert get(url, b1.h(Accept="*/*"), http).status_code == 404
    assert _delete(b1.study_url, headers, http).status_code == 404


def test_delete_study(server, http):
    data = DataDir(server.data_dir)
    study = new_uid()
    items = store(server, dataset(study_uid=study, series_uid=study + ".1"),
                  dataset(study_uid=study, series_uid=study + ".2"))
    blobs = [_blob(data, item) for item in items]
    other = store(server, dataset())[0]  # another study of the same store is untouched
    headers = server.provisioned.headers()
    assert _delete(items[0].study_url, headers, http).status_code == 204
    for item in items:
        _assert_gone(item, http, data)
    assert not any(os.path.exists(path) for path in blobs)
    assert study not in data.studies("demo")
    assert not {study + ".1", study + ".2"} & set(data.series("demo"))
    for url in (items[0].study_url, items[0].series_url, items[0].url):
        assert _delete(url, headers, http).status_code == 404
    _assert_present(other, http)


def test_delete_refused(server, http):
    data = DataDir(server.data_dir)
    [item] = store(server, dataset())
    blob = _blob(data, item)
    for url in (item.url, item.series_url, item.study_url):
        for key, status in (("read", 403), ("other", 403)):
            response = _delete(url, server.provisioned.headers(key), http)
            error_json(response, status)
        response = _delete(url, {}, http)
        error_json(response, 401)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="litevna"'
    _assert_present(item, http)
    assert os.path.exists(blob)


@pytest.mark.parametrize("path,status", [
    ("/studies/{u}", 404), ("/studies/{s}/series/{u}", 404),
    ("/studies/{s}/series/{se}/instances/{u}", 404), ("/studies/{u}/series/{se}", 404),
    ("/studies/{u}/series/{se}/instances/{i}", 404),
    ("/studies/1.2.abc", 400), ("/studies/{s}/series/1.02.3", 400),
    ("/studies/{s}/series/{se}/instances/" + "1." + "2" * 70, 400),
])
def test_delete_unknown_or_invalid(server, http, path, status):
    data = DataDir(server.data_dir)
    [item] = store(server, dataset())
    url = item.base + path.format(u=new_uid(), s=item.study, se=item.series, i=item.sop)
    error_json(_delete(url, server.provisioned.headers(), http), status)
    assert data.rows(item.sop) != []


# --- 9. CORS ----------------------------------------------------------------------------------

def _header_list(value):
    return {part.strip().lower() for part in (value or "").split(",")}


def test_cors_preflight(shipped, http):
    item = shipped["CT_small.dcm"]
    for url in (item.url, item.url + "/frames/1", item.url + "/bulkdata/7FE00010"):
        for method in ("GET", "DELETE"):
            response = request("OPTIONS", url, {
                "Origin": "https://viewer.example.org", "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, accept, range"}, http)
            assert response.status_code == 204, response.text
            assert response.headers["Access-Control-Allow-Origin"] in (
                "*", "https://viewer.example.org")
            assert {"get", method.lower()} <= _header_list(
                response.headers.get("Access-Control-Allow-Methods"))
            assert {"authorization", "accept", "range", "content-type"} <= _header_list(
                response.headers.get("Access-Control-Allow-Headers"))


def test_cors_on_responses(shipped, http):
    item = shipped["CT_small.dcm"]
    origin = {"Origin": "https://viewer.example.org"}
    for url, headers in ((item.url + "/metadata", item.h(Accept=DICOM_JSON, **origin)),
                         (item.url, item.h(Accept=DICOM, **origin)),
                         (item.url, origin)):  # a 401 must be readable by the page too
        response = get(url, headers, http)
        assert response.headers["Access-Control-Allow-Origin"] in (
            "*", "https://viewer.example.org"), url
        assert {"etag", "warning", "content-location"} <= _header_list(
            response.headers.get("Access-Control-Expose-Headers"))


# --- 10. authentication -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_item(server):
    """A two-frame instance in the provisioned "demo" store."""
    return store(server, dataset(frames=2))[0]


def _routes(item):
    return {
        "retrieve study": ("GET", item.study_url, AS_STORED),
        "retrieve series": ("GET", item.series_url, AS_STORED),
        "retrieve instance": ("GET", item.url, AS_STORED),
        "retrieve part10": ("GET", item.url, DICOM),
        "retrieve zip": ("GET", item.study_url, "application/zip"),
        "study metadata": ("GET", item.study_url + "/metadata", DICOM_JSON),
        "series metadata": ("GET", item.series_url + "/metadata", DICOM_JSON),
        "instance metadata": ("GET", item.url + "/metadata", DICOM_JSON),
        "frames": ("GET", item.url + "/frames/1,2", FRAMES_AS_STORED),
        "frame": ("GET", item.url + "/frame/2", FRAMES_AS_STORED),
        "bulkdata": ("GET", item.url + "/bulkdata/7FE00010", OCTET),
        "delete instance": ("DELETE", item.url, None),
        "delete series": ("DELETE", item.series_url, None),
        "delete study": ("DELETE", item.study_url, None),
    }


ROUTES = list(_routes(Stored("", {}, "", "", "")))


@pytest.mark.parametrize("route", ROUTES)
def test_no_token_is_401(server, demo_item, http, route):
    method, url, accept = _routes(demo_item)[route]
    response = request(method, url, {"Accept": accept} if accept else {}, http)
    error_json(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="litevna"'


@pytest.mark.parametrize("route", ROUTES)
def test_other_stores_key_is_403(server, demo_item, http, route):
    method, url, accept = _routes(demo_item)[route]
    headers = server.provisioned.headers("other", **({"Accept": accept} if accept else {}))
    error_json(request(method, url, headers, http), 403)


@pytest.mark.parametrize("route", ROUTES)
def test_read_only_key(server, demo_item, http, route):
    method, url, accept = _routes(demo_item)[route]
    headers = server.provisioned.headers("read", **({"Accept": accept} if accept else {}))
    response = request(method, url, headers, http)
    if method == "DELETE":
        error_json(response, 403)
    else:
        assert response.status_code == 200, response.text
