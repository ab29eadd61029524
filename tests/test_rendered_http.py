"""Rendered images and thumbnails against a real ``litevna serve`` (SPEC §4 WADO-RS rendered;
PS3.18 §8.3.5, §10.4.1.1.3).

Every level (study, series, instance, frame; ``…/frames/{n}`` and ``…/frame/{n}``) and both
resources (``rendered``, ``thumbnail``) are reached over HTTP with ``requests``. The
oracles are pydicom's: ``pixel_array`` + ``apply_modality_lut`` + ``apply_voi_lut`` (the
windowing steps of PS3.3 C.11), ``apply_color_lut`` and its YBR → RGB conversion.
Images are decoded with Pillow.
"""

import io
import os
import string
import warnings

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.pixels import apply_modality_lut

from helpers import (
    TEST_FILES, InstanceUrls, bearer, dataset, frame_pixels, get, multipart, multipart_type,
    new_uid, part10, post, provision, referenced, render_oracle, request,
)
from live import LiveServer

pytestmark = pytest.mark.usefixtures("server_log_is_clean")

B = "rendered-test-boundary"
JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no pixel data

#: pydicom's shipped files used here: name → what it exercises.
SHIPPED = {
    "CT_small.dcm": "CT, rescale -1024, no window: the windowing oracle",
    "MR_small.dcm": "MR with a window in the data set (uncompressed)",
    "MR_small_RLE.dcm": "RLE Lossless",
    "MR_small_jp2klossless.dcm": "JPEG 2000 Lossless",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless",
    "JPEG2000.dcm": "JPEG 2000 (lossy syntax), NM, no window (min/max)",
    "693_J2KI.dcm": "JPEG 2000 CT 512×512 with a window",
    "JPGExtended.dcm": "JPEG Extended, 12 bits",
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG Baseline, YBR_FULL",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG Lossless SV1, RGB",
    "SC_rgb_rle.dcm": "RLE, RGB",
    "examples_rgb_color.dcm": "RGB uncompressed",
    "examples_ybr_color.dcm": "JPEG Baseline YBR_FULL_422, 30 frames",
    "SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422 uncompressed",
    "examples_palette.dcm": "PALETTE COLOR",
    "rtplan.dcm": "no pixel data",
    "test-SR.dcm": "no pixel data (SR)",
}
COLOUR = ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "SC_ybr_full_422_uncompressed.dcm",
          "examples_palette.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm",
          "SC_rgb_rle.dcm"]
COMPRESSED = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "JPEG2000.dcm", "693_J2KI.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm",
              "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "examples_ybr_color.dcm"]
LOSSLESS_MR = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]




# --- oracles --------------------------------------------------------------------------------

def read(source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(source, bytes):
            return pydicom.dcmread(io.BytesIO(source))
        return pydicom.dcmread(os.path.join(TEST_FILES, source))


def max_diff(actual, expected):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return int(np.abs(actual.astype(int) - expected.astype(int)).max())


# --- fixtures and helpers --------------------------------------------------------------------

class Item(InstanceUrls):
    """One stored instance and its URLs."""

    def __init__(self, base, headers, study, series, sop, frames=1):
        self.base, self.headers = base, headers
        self.study, self.series, self.sop, self.frames = study, series, sop, frames

    @classmethod
    def of(cls, base, headers, ds):
        return cls(base, headers, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                   str(ds.SOPInstanceUID), int(ds.get("NumberOfFrames") or 1))

    def frame_url(self, n=1):
        return f"{self.url}/frames/{n}"

    def h(self, **extra):
        return {**self.headers, **extra}


def store(server, *datasets, label="demo", headers=None):
    """STOW data sets (or Part 10 bytes) in one request; an Item for each."""
    headers = headers or server.provisioned.headers()
    bodies = [d if isinstance(d, bytes) else part10(d) for d in datasets]
    response = post(f"{server.url}/{label}/dicomweb/studies", multipart(bodies, B),
                    multipart_type(B), headers)
    assert response.status_code == 200, response.text
    items = [Item.of(f"{server.url}/{label}/dicomweb", headers, read(body)) for body in bodies]
    assert sorted(referenced(response.json())) == sorted(item.sop for item in items)
    return items


@pytest.fixture(scope="module")
def shipped(server):
    """name → Item for SHIPPED, stored in stores of their own where SOP Instance UIDs repeat."""
    layers = []  # [(set of SOP UIDs, [names])]
    for name in SHIPPED:
        uid = str(read(name).SOPInstanceUID)
        for uids, names in layers:
            if uid not in uids:
                uids.add(uid)
                names.append(name)
                break
        else:
            layers.append(({uid}, [name]))
    out = {}
    for n, (_, names) in enumerate(layers):
        label = f"rendered-files-{n}"
        headers = bearer(provision(server.data_dir, label, permissions=("read", "write")))
        raw = []
        for name in names:
            with open(os.path.join(TEST_FILES, name), "rb") as fp:
                raw.append(fp.read())
        for name, item in zip(names, store(server, *raw, label=label, headers=headers)):
            out[name] = item
    return out


@pytest.fixture(scope="module")
def ct512(server):
    """A 512×512 CT frame (rescale -1024) in the "demo" store."""
    return store(server, dataset(rows=512, columns=512, RescaleSlope=1, RescaleIntercept=-1024,
                                 WindowCenter=40, WindowWidth=400))[0]


@pytest.fixture(scope="module")
def wide(server):
    """A 256 columns × 192 rows CT frame: a non-square image for the size tests."""
    ds = dataset(rows=192, columns=256, seed=5)
    return store(server, ds)[0]


@pytest.fixture(scope="module")
def multi(server):
    """A 4-frame 16×16 CT instance, each frame different."""
    ds = dataset(frames=4, seed=7)
    [item] = store(server, ds)
    item.ds = ds
    return item


def image_of(response, media_type=None):
    assert response.status_code == 200, response.text
    if media_type is not None:
        assert response.headers["Content-Type"] == media_type
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def pixels_of(response, media_type=PNG):
    return np.asarray(image_of(response, media_type))


def error_json(response, status):
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json", response.headers
    body = response.json()
    assert body["status"] == status and body["error"], body
    return body


FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}


# --- 1. the client document's example ---------------------------------------------------------

def test_client_document_example(ct512, http):
    response = get(ct512.frame_url(1) + "/rendered?window=400,1500&width=512&quality=90",
                   ct512.h(Accept=JPEG), http)
    image = image_of(response, JPEG)
    assert image.format == "JPEG"
    assert image.width == 512 and image.height == 512
    assert image.mode == "L"


def test_window_and_quality_change_the_jpeg(ct512, http):
    base = ct512.frame_url(1) + "/rendered"
    wide_window = get(base + "?window=400,1500&quality=90", ct512.h(Accept=JPEG), http).content
    narrow = get(base + "?window=40,80&quality=90", ct512.h(Accept=JPEG), http).content
    low_quality = get(base + "?window=400,1500&quality=10", ct512.h(Accept=JPEG), http).content
    assert wide_window != narrow
    assert len(low_quality) < len(wide_window)


# --- 2. media types ----------------------------------------------------------------------------

@pytest.mark.parametrize("accept,query,expected", [
    (None, "", JPEG),
    (JPEG, "", JPEG),
    (PNG, "", PNG),
    ("*/*", "", JPEG),
    ("image/*", "", JPEG),
    ("image/png, image/jpeg;q=0.5", "", PNG),
    ("image/jpeg;q=0.1, image/png", "", PNG),
    ("text/html, image/png;q=0.2", "", PNG),
    (JPEG, "?accept=image/png", PNG),
    (None, "?accept=image/png", PNG),
    (PNG, "?accept=image/jpeg", JPEG),
    (None, "?accept=image%2Fpng", PNG),
])
@pytest.mark.parametrize("level", ["frame", "instance", "study"])
def test_negotiation(multi, http, accept, query, expected, level):
    url = {"frame": multi.frame_url(2), "instance": multi.url, "study": multi.study_url}[level]
    headers = multi.h(**({"Accept": accept} if accept else {}))
    image = image_of(get(url + "/rendered" + query, headers, http), expected)
    assert image.format == FORMATS[expected]
    assert image.size == (16, 16)


@pytest.mark.parametrize("accept,query", [
    ("text/html", ""), ("application/dicom", ""), ("image/webp", ""),
    ("image/jpeg;q=0", ""), (JPEG, "?accept=text/html"),
])
def test_not_acceptable(multi, http, accept, query):
    for url in (multi.frame_url(1), multi.url, multi.series_url):
        for resource in ("rendered", "thumbnail"):
            error_json(get(f"{url}/{resource}{query}", multi.h(Accept=accept), http), 406)


def test_gif_of_a_multiframe_instance_is_animated(multi, http):
    image = image_of(get(multi.url + "/rendered", multi.h(Accept=GIF), http), GIF)
    assert image.format == "GIF"
    assert image.n_frames == 4 and image.is_animated
    # each frame of the animation is that frame of the instance (GIF: a palette of 256 greys),
    # all frames under one window (no window in the data set: the min/max over all frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = apply_modality_lut(multi.ds.pixel_array, multi.ds).astype(np.float64)
    low, high = values.min(), values.max()
    for index in range(4):
        image.seek(index)
        frame = np.asarray(image.convert("L"))
        expected = np.rint((values[index] - low) / (high - low) * 255).astype(np.uint8)
        assert max_diff(frame, expected) <= 1, index


def test_gif_via_query_and_of_one_frame(multi, http):
    animated = image_of(get(multi.url + "/rendered?accept=image/gif", multi.h(), http), GIF)
    assert animated.n_frames == 4
    single = image_of(get(multi.frame_url(3) + "/rendered", multi.h(Accept=GIF), http), GIF)
    assert single.n_frames == 1
    assert max_diff(np.asarray(single.convert("L")), render_oracle(multi.ds, 2)) <= 1


# --- 3. levels ----------------------------------------------------------------------------------

def test_instance_level_is_frame_one(multi, http):
    instance = pixels_of(get(multi.url + "/rendered", multi.h(Accept=PNG), http))
    frame1 = pixels_of(get(multi.frame_url(1) + "/rendered", multi.h(Accept=PNG), http))
    frame2 = pixels_of(get(multi.frame_url(2) + "/rendered", multi.h(Accept=PNG), http))
    assert np.array_equal(instance, frame1)
    assert not np.array_equal(instance, frame2)
    assert max_diff(frame2, render_oracle(multi.ds, 1)) <= 1


def test_each_frame(multi, http):
    for n in range(1, 5):
        plural = get(multi.frame_url(n) + "/rendered", multi.h(Accept=PNG), http)
        assert max_diff(pixels_of(plural), render_oracle(multi.ds, n - 1)) <= 1, n


@pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
def test_singular_frame_path_is_the_same_resource(multi, http, resource):
    """SPEC §4: the client's document also spells it …/frame/1; that path is the same resource."""
    for n in range(1, 5):
        plural = get(f"{multi.url}/frames/{n}/{resource}", multi.h(Accept=PNG), http)
        singular = get(f"{multi.url}/frame/{n}/{resource}", multi.h(Accept=PNG), http)
        assert (singular.status_code, singular.headers.get("Content-Type")) == (200, PNG), (
            f"GET …/frame/{n}/{resource}: {singular.status_code} {singular.text[:100]} "
            f"Location={singular.headers.get('Location')}")
        assert singular.content == plural.content
        assert singular.headers["ETag"] == plural.headers["ETag"]


@pytest.fixture(scope="module")
def study_of_series(server):
    """A study whose first series (by SeriesNumber) starts with an SR, then two images;
    its second series (stored first) one image."""
    study = new_uid()
    first, second = study + ".1", study + ".2"
    late = dataset(study_uid=study, series_uid=second, SeriesNumber=2, InstanceNumber=1,
                   seed=21, rows=40, columns=30)
    sr = dataset(study_uid=study, series_uid=first, SeriesNumber=1, InstanceNumber=1)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(sr, keyword)
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = SR_CLASS
    sr.Modality = "SR"
    image_a = dataset(study_uid=study, series_uid=first, SeriesNumber=1, InstanceNumber=2,
                      seed=22, rows=20, columns=24)
    image_b = dataset(study_uid=study, series_uid=first, SeriesNumber=1, InstanceNumber=3,
                      seed=23, rows=20, columns=24)
    items = store(server, late, image_b, sr, image_a)
    return dict(zip(("late", "b", "sr", "a"), items)), {"late": late, "a": image_a, "b": image_b}


@pytest.mark.parametrize("resource", ["rendered", "thumbnail"])
def test_study_and_series_render_their_first_image(study_of_series, http, resource):
    items, datasets = study_of_series
    png = dict(items["a"].h(Accept=PNG))

    def render(url):
        return get(f"{url}/{resource}", png, http)

    study = render(items["a"].study_url)
    series = render(items["a"].series_url)
    instance = render(items["a"].url)
    assert study.content == series.content == instance.content
    assert max_diff(pixels_of(study), render_oracle(datasets["a"])) <= 1
    late = render(items["late"].series_url)
    assert late.content == render(items["late"].url).content
    assert max_diff(pixels_of(late), render_oracle(datasets["late"])) <= 1
    assert pixels_of(late).shape == (40, 30)
    # JPEG by default at these levels too
    assert image_of(get(f"{items['a'].study_url}/{resource}", items["a"].h(), http),
                    JPEG).format == "JPEG"


def test_study_level_gif_of_a_multiframe_first_instance(multi, http):
    image = image_of(get(multi.study_url + "/rendered", multi.h(Accept=GIF), http), GIF)
    assert image.n_frames == 4


# --- 4. sizes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,size", [
    ("", (256, 192)),
    ("?width=100", (100, 75)),
    ("?height=48", (64, 48)),
    ("?width=100&height=30", (40, 30)),
    ("?width=512", (512, 384)),
    ("?width=300&height=300", (300, 225)),
    ("?viewport=64,64", (64, 48)),
    ("?viewport=512,100", (133, 100)),
    ("?viewport=100,100,0,0,128,96", (100, 75)),
    ("?viewport=128,96,0,0,128,96", (128, 96)),
    ("?viewport=64,64,10,20,32,32", (64, 64)),
    ("?viewport=32,32,128,96,,", (32, 24)),
    ("?width=4096&height=4096", (4096, 3072)),
])
def test_rendered_size(wide, http, query, size):
    for url in (wide.frame_url(1), wide.url, wide.series_url):
        image = image_of(get(f"{url}/rendered{query}", wide.h(Accept=PNG), http), PNG)
        assert image.size == size, (url, query)


@pytest.mark.parametrize("query,size", [
    ("", (128, 96)),
    ("?width=64", (64, 48)),
    ("?width=300", (300, 225)),
    ("?viewport=512,512", (512, 384)),
    ("?height=16", (21, 16)),
])
def test_thumbnail_size(wide, http, query, size):
    for url in (wide.frame_url(1), wide.url, wide.series_url, wide.study_url):
        image = image_of(get(f"{url}/thumbnail{query}", wide.h(Accept=PNG), http), PNG)
        assert image.size == size, (url, query)
    default = image_of(get(f"{wide.url}/thumbnail{query}", wide.h(), http), JPEG)
    assert default.size == size


def test_thumbnail_fits_128_and_never_enlarges(multi, ct512, shipped, http):
    assert image_of(get(ct512.url + "/thumbnail", ct512.h(), http), JPEG).size == (128, 128)
    assert image_of(get(multi.url + "/thumbnail", multi.h(), http), JPEG).size == (16, 16)
    tall = shipped["JPEG2000.dcm"]  # 256 columns × 1024 rows
    assert image_of(get(tall.url + "/thumbnail", tall.h(), http), JPEG).size == (32, 128)
    palette = shipped["examples_palette.dcm"]  # 800 × 350
    assert image_of(get(palette.url + "/thumbnail", palette.h(), http), JPEG).size == (128, 56)


def test_viewport_crop_is_the_region(wide, http):
    full = pixels_of(get(wide.url + "/rendered", wide.h(Accept=PNG), http))
    crop = pixels_of(get(wide.url + "/rendered?viewport=32,16,10,20,32,16", wide.h(Accept=PNG),
                         http))
    assert np.array_equal(crop, full[20:36, 10:42])
    flipped = pixels_of(get(wide.url + "/rendered?viewport=32,16,10,20,-32,16",
                            wide.h(Accept=PNG), http))
    assert np.array_equal(flipped, full[20:36, 10:42][:, ::-1])


# --- 5. pixels against the oracle ----------------------------------------------------------------

@pytest.mark.parametrize("window", [(40, 400), (400, 1500), (-600, 1200), (1000, 1)])
def test_ct_png_equals_the_oracle(shipped, http, window):
    item = shipped["CT_small.dcm"]
    query = f"?window={window[0]},{window[1]}"
    for url in (item.frame_url(1), item.url):
        actual = pixels_of(get(url + "/rendered" + query, item.h(Accept=PNG), http))
        assert max_diff(actual, render_oracle(read("CT_small.dcm"), window=window)) <= 1, url


def test_ct_without_window_is_min_max(shipped, http):
    item = shipped["CT_small.dcm"]
    actual = pixels_of(get(item.url + "/rendered", item.h(Accept=PNG), http))
    assert max_diff(actual, render_oracle(read("CT_small.dcm"))) <= 1
    assert actual.min() == 0 and actual.max() == 255


def test_512_ct_png_equals_the_oracle(ct512, http):
    ds = read(get(ct512.url, ct512.h(Accept="application/dicom"), http).content)
    default = pixels_of(get(ct512.frame_url(1) + "/rendered", ct512.h(Accept=PNG), http))
    assert max_diff(default, render_oracle(ds)) <= 1  # the data set's window 40/400
    asked = pixels_of(get(ct512.frame_url(1) + "/rendered?window=400,1500",
                          ct512.h(Accept=PNG), http))
    assert max_diff(asked, render_oracle(ds, window=(400, 1500))) <= 1
    # the JPEG is close to the PNG
    jpeg = pixels_of(get(ct512.frame_url(1) + "/rendered?window=400,1500&quality=100",
                         ct512.h(Accept=JPEG), http), JPEG)
    assert np.abs(jpeg.astype(int) - asked.astype(int)).mean() < 3


def test_window_functions(shipped, http):
    item = shipped["CT_small.dcm"]
    images = {}
    for function in ("linear", "linear-exact", "sigmoid", "LINEAR_EXACT"):
        images[function] = pixels_of(get(f"{item.url}/rendered?window=40,400,{function}",
                                          item.h(Accept=PNG), http))
    assert np.array_equal(images["linear"], pixels_of(get(f"{item.url}/rendered?window=40,400",
                                                           item.h(Accept=PNG), http)))
    assert np.array_equal(images["linear-exact"], images["LINEAR_EXACT"])
    assert not np.array_equal(images["linear"], images["sigmoid"])
    # PS3.3 C.11.2.1.3.2 LINEAR_EXACT: (x - c) / w + 0.5
    ds = read("CT_small.dcm")
    hu = apply_modality_lut(frame_pixels(ds), ds).astype(np.float64)
    exact = np.rint(np.clip(((hu - 40) / 400 + 0.5) * 255, 0, 255))
    assert max_diff(images["linear-exact"], exact.astype(np.uint8)) <= 1


def test_monochrome1_is_inverted(server, http):
    study = new_uid()
    mono2 = dataset(study_uid=study, seed=31, rows=24, columns=20, WindowCenter=500,
                    WindowWidth=2000)
    mono1 = dataset(study_uid=study, seed=31, rows=24, columns=20, WindowCenter=500,
                    WindowWidth=2000, PhotometricInterpretation="MONOCHROME1")
    a, b = store(server, mono2, mono1)
    for query in ("", "?window=0,1000", "?window=0,1000,sigmoid"):
        two = pixels_of(get(a.url + "/rendered" + query, a.h(Accept=PNG), http))
        one = pixels_of(get(b.url + "/rendered" + query, b.h(Accept=PNG), http))
        assert max_diff(one, 255 - two) <= 1, query
    one = pixels_of(get(b.url + "/rendered", b.h(Accept=PNG), http))
    assert max_diff(one, render_oracle(mono1)) <= 1
    # without any window: min/max, then inverted
    del mono1.WindowCenter, mono1.WindowWidth
    mono1.SOPInstanceUID = mono1.file_meta.MediaStorageSOPInstanceUID = new_uid()
    [c] = store(server, mono1)
    one = pixels_of(get(c.url + "/rendered", c.h(Accept=PNG), http))
    assert max_diff(one, render_oracle(mono1)) <= 1
    assert one[frame_pixels(mono1) == frame_pixels(mono1).max()].max() <= 1  # brightest is black


@pytest.mark.parametrize("name", COLOUR)
def test_colour(shipped, http, name):
    item = shipped[name]
    for url in (item.url, item.frame_url(1)):
        image = image_of(get(url + "/rendered", item.h(Accept=PNG), http), PNG)
        assert image.mode == "RGB", (name, image.mode)
        actual = np.asarray(image)
        assert (actual[..., 0] != actual[..., 1]).any() or (actual[..., 1] != actual[..., 2]).any()
        assert max_diff(actual, render_oracle(read(name))) <= 1, name
    jpeg = image_of(get(item.url + "/rendered", item.h(), http), JPEG)
    assert jpeg.mode == "RGB"
    assert image_of(get(item.url + "/thumbnail", item.h(), http), JPEG).mode == "RGB"


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed(shipped, http, name):
    item = shipped[name]
    actual = pixels_of(get(item.url + "/rendered", item.h(Accept=PNG), http))
    assert max_diff(actual, render_oracle(read(name))) <= 1, name
    image_of(get(item.frame_url(1) + "/rendered", item.h(Accept=JPEG), http), JPEG)
    image_of(get(item.url + "/thumbnail", item.h(), http), JPEG)


def test_lossless_syntaxes_render_the_same_image(shipped, http):
    reference = shipped["MR_small.dcm"]
    expected = get(reference.url + "/rendered", reference.h(Accept=PNG), http)
    assert max_diff(pixels_of(expected), render_oracle(read("MR_small.dcm"))) <= 1
    for name in LOSSLESS_MR:
        item = shipped[name]
        got = get(item.url + "/rendered", item.h(Accept=PNG), http)
        assert np.array_equal(pixels_of(got), pixels_of(expected)), name


def test_frame_of_a_compressed_multiframe(shipped, http):
    item = shipped["examples_ybr_color.dcm"]
    ds = read("examples_ybr_color.dcm")
    for n in (2, 30):
        actual = pixels_of(get(item.frame_url(n) + "/rendered", item.h(Accept=PNG), http))
        assert max_diff(actual, render_oracle(ds, n - 1)) <= 1, n
    error_json(get(item.frame_url(31) + "/rendered", item.h(), http), 404)


# --- 6. errors ---------------------------------------------------------------------------------

BAD_QUERIES = [
    "window=abc", "window=40", "window=40,", "window=40,0", "window=40,-5", "window=a,400",
    "window=40,400,cubic", "window=nan,400", "window=40,inf", "window=40,400,linear,1",
    "width=0", "width=-1", "width=abc", "width=1.5", "width=", "width=4097",
    "height=0", "height=x", "quality=101", "quality=0", "quality=abc", "quality=",
    "viewport=1,2,3", "viewport=1", "viewport=0,10", "viewport=a,b", "viewport=10,10,0,0,0,5",
    "viewport=10,10,9999,0,5,5", "width=10&width=20", "window=40,400&window=40,400",
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_parameters_are_400(multi, http, query):
    for url in (multi.frame_url(1), multi.url, multi.study_url):
        for resource in ("rendered", "thumbnail"):
            error_json(get(f"{url}/{resource}?{query}", multi.h(), http), 400)


@pytest.mark.parametrize("path", ["frames", "frame"])
@pytest.mark.parametrize("listing", ["0", "1,2", "abc", "-1", "1.5", "1,", ",1", "%20"])
def test_bad_frame_lists_are_400(multi, http, listing, path):
    for resource in ("rendered", "thumbnail"):
        error_json(get(f"{multi.url}/{path}/{listing}/{resource}", multi.h(), http), 400)


@pytest.mark.parametrize("path", ["frames", "frame"])
@pytest.mark.parametrize("listing", ["5", "99", "99999999999999999999"])
def test_frame_out_of_range_is_404(multi, http, listing, path):
    for resource in ("rendered", "thumbnail"):
        error_json(get(f"{multi.url}/{path}/{listing}/{resource}", multi.h(), http), 404)


def test_unknown_resources_are_404(multi, http):
    unknown = new_uid()
    urls = [f"{multi.series_url}/instances/{unknown}",
            f"{multi.series_url}/instances/{unknown}/frames/1",
            f"{multi.study_url}/series/{unknown}",
            f"{multi.study_url}/series/{unknown}/instances/{multi.sop}",
            f"{multi.base}/studies/{unknown}",
            f"{multi.base}/studies/{unknown}/series/{multi.series}/instances/{multi.sop}"]
    for url in urls:
        for resource in ("rendered", "thumbnail"):
            error_json(get(f"{url}/{resource}", multi.h(), http), 404)


def test_invalid_uids_are_400(multi, http):
    for url in (f"{multi.base}/studies/1.2.abc", f"{multi.study_url}/series/1.02.3",
                f"{multi.series_url}/instances/1.{'2' * 70}"):
        error_json(get(url + "/rendered", multi.h(), http), 400)


def test_no_pixel_data_is_404(shipped, study_of_series, http):
    for name in ("rtplan.dcm", "test-SR.dcm"):
        item = shipped[name]
        for url in (item.url, item.frame_url(1), item.series_url, item.study_url):
            for resource in ("rendered", "thumbnail"):
                error_json(get(f"{url}/{resource}", item.h(), http), 404)
    sr = study_of_series[0]["sr"]
    for url in (sr.url, sr.frame_url(1)):
        error_json(get(url + "/rendered", sr.h(), http), 404)


# --- 7. authentication ---------------------------------------------------------------------------

def _rendered_urls(item):
    urls = {}
    for level, url in (("study", item.study_url), ("series", item.series_url),
                       ("instance", item.url), ("frames", item.frame_url(1)),
                       ("frame", f"{item.url}/frame/1")):
        for resource in ("rendered", "thumbnail"):
            urls[f"{level} {resource}"] = f"{url}/{resource}"
    return urls


ROUTES = list(_rendered_urls(Item("", {}, "", "", "")))


@pytest.mark.parametrize("route", ROUTES)
def test_authentication(server, multi, http, route):
    url = _rendered_urls(multi)[route]
    response = get(url, {"Accept": JPEG}, http)
    error_json(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="litevna"'
    error_json(get(url, {"Accept": JPEG, "Authorization": "Bearer not.a.token"}, http), 401)
    error_json(get(url, server.provisioned.headers("other", Accept=JPEG), http), 403)
    read_only = get(url, server.provisioned.headers("read", Accept=JPEG), http)
    full = get(url, server.provisioned.headers("all", Accept=JPEG), http)
    assert image_of(read_only, JPEG).format == "JPEG"
    assert read_only.content == full.content


# --- 8. caching ----------------------------------------------------------------------------------

def test_same_request_same_bytes_and_etag(ct512, http):
    url = ct512.frame_url(1) + "/rendered?window=400,1500&width=256"
    first = get(url, ct512.h(Accept=JPEG), http)
    second = get(url, ct512.h(Accept=JPEG), http)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    etag = first.headers.get("ETag")
    assert etag and etag == second.headers["ETag"]
    other_window = get(ct512.frame_url(1) + "/rendered?window=40,400&width=256",
                       ct512.h(Accept=JPEG), http)
    as_png = get(url, ct512.h(Accept=PNG), http)
    thumbnail = get(ct512.frame_url(1) + "/thumbnail?window=400,1500&width=256",
                    ct512.h(Accept=JPEG), http)
    assert len({etag, other_window.headers["ETag"], as_png.headers["ETag"]}) == 3
    assert thumbnail.content == first.content  # the same image, asked as a thumbnail


def test_if_none_match(ct512, http):
    url = ct512.url + "/rendered?window=40,400"
    first = get(url, ct512.h(Accept=PNG), http)
    etag = first.headers["ETag"]
    for match in (etag, f'"nope", {etag}', f"{etag} , \"other\""):
        response = get(url, ct512.h(Accept=PNG, **{"If-None-Match": match}), http)
        assert response.status_code == 304, match
        assert response.content == b""
        assert response.headers["ETag"] == etag
    stale = get(url, ct512.h(Accept=PNG, **{"If-None-Match": '"not-it"'}), http)
    assert stale.status_code == 200 and stale.content == first.content
    other = get(ct512.url + "/rendered?window=40,401", ct512.h(Accept=PNG,
                                                               **{"If-None-Match": etag}), http)
    assert other.status_code == 200


def test_auth_token_in_the_query_changes_nothing(server, ct512, http):
    key = server.provisioned.keys["read"]["value"]
    url = ct512.frame_url(1) + "/rendered?window=400,1500&width=128"
    plain = get(url, ct512.h(Accept=JPEG), http)
    alone = get(url + "&_auth_token=" + key, {"Accept": JPEG}, http)
    if alone.status_code == 401:
        # _auth_token is not a credential yet (SPEC §3 lists it; only Bearer is wired in):
        # it must still be left out of the rendering and the cache key.
        with_token = get(url + "&_auth_token=" + key, ct512.h(Accept=JPEG), http)
        first_token = get(url.replace("?", f"?_auth_token={key}&"), ct512.h(Accept=JPEG), http)
    else:
        with_token = alone
        first_token = get(url.replace("?", f"?_auth_token={key}&"), {"Accept": JPEG}, http)
    for response in (with_token, first_token):
        assert response.status_code == 200, response.text
        assert response.content == plain.content
        assert response.headers["ETag"] == plain.headers["ETag"]
    response = get(url + "&_auth_token=" + key,
                   ct512.h(Accept=JPEG, **{"If-None-Match": plain.headers["ETag"]}), http)
    assert response.status_code == 304


def test_delete_invalidates(server, http):
    study = new_uid()
    first = dataset(study_uid=study, SeriesNumber=1, InstanceNumber=1, seed=41)
    second = dataset(study_uid=study, SeriesNumber=1, InstanceNumber=2, seed=42)
    a, b = store(server, first, second)
    png = a.h(Accept=PNG)
    before = {url: get(url, png, http) for url in (a.url + "/rendered", a.frame_url(1) + "/rendered",
                                                    a.url + "/thumbnail", a.study_url + "/rendered",
                                                    a.series_url + "/thumbnail")}
    assert all(r.status_code == 200 for r in before.values())
    assert max_diff(pixels_of(before[a.study_url + "/rendered"]), render_oracle(first)) <= 1
    response = request("DELETE", a.url, a.h(), http)
    assert response.status_code == 204, response.text
    for url in (a.url + "/rendered", a.frame_url(1) + "/rendered", a.url + "/thumbnail",
                a.frame_url(1) + "/thumbnail"):
        error_json(get(url, png, http), 404)
        error_json(get(url, a.h(Accept=PNG, **{"If-None-Match": before.get(
            url, before[a.url + "/rendered"]).headers["ETag"]}), http), 404)
    # the study and series now render their remaining instance
    study_png = get(a.study_url + "/rendered", png, http)
    assert max_diff(pixels_of(study_png), render_oracle(second)) <= 1
    assert study_png.headers["ETag"] != before[a.study_url + "/rendered"].headers["ETag"]
    assert get(a.series_url + "/thumbnail", png, http).content != \
        before[a.series_url + "/thumbnail"].content
    assert request("DELETE", b.study_url, b.h(), http).status_code == 204
    for url in (b.study_url, b.series_url, b.url, b.frame_url(1)):
        error_json(get(url + "/rendered", png, http), 404)


def test_replace_changes_image_and_etag(tmp_path_factory, http):
    data_dir = tmp_path_factory.mktemp("replace")
    headers = bearer(provision(data_dir, "replace-store"))
    with LiveServer(data_dir, "--on-duplicate", "replace") as live:
        study, sop = new_uid(), new_uid()
        old = dataset(study_uid=study, sop_uid=sop, seed=51, rows=20, columns=20)
        new = dataset(study_uid=study, sop_uid=sop, seed=52, rows=20, columns=20)
        base = f"{live.url}/replace-store/dicomweb"

        def stow(ds):
            response = post(base + "/studies", part10(ds), "application/dicom", headers)
            assert response.status_code == 200, response.text
            return Item.of(base, headers, ds)

        item = stow(old)
        urls = [item.url + "/rendered", item.frame_url(1) + "/rendered", item.url + "/thumbnail",
                item.study_url + "/rendered", item.series_url + "/thumbnail"]
        before = {url: get(url, item.h(Accept=PNG), http) for url in urls}
        for url in urls:  # twice: now they are cached
            assert get(url, item.h(Accept=PNG), http).content == before[url].content
        assert max_diff(pixels_of(before[urls[0]]), render_oracle(old)) <= 1
        stow(new)
        for url in urls:
            after = get(url, item.h(Accept=PNG), http)
            assert after.status_code == 200, after.text
            assert after.content != before[url].content, url
            assert after.headers["ETag"] != before[url].headers["ETag"], url
            assert max_diff(pixels_of(after), render_oracle(new)) <= 1, url
            again = get(url, item.h(Accept=PNG, **{"If-None-Match": before[url].headers["ETag"]}),
                        http)
            assert again.status_code == 200 and again.content == after.content, url
        # the same bytes again: nothing changes
        current = get(urls[0], item.h(Accept=PNG), http)
        stow(new)
        again = get(urls[0], item.h(Accept=PNG), http)
        assert again.content == current.content
        assert again.headers["ETag"] == current.headers["ETag"]
        log = live.log()
    assert "Traceback" not in log


# --- 9. no 5xx for arbitrary parameters ----------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_NUMBERS = st.integers(-3, 300).map(str)
_LISTS = st.lists(st.one_of(_NUMBERS, st.sampled_from(["", " ", "a", "1e3", "-0", "linear",
                                                        "sigmoid", "nan", "0x10"])),
                  max_size=7).map(",".join)
_VALUE = st.one_of(_TEXT, _NUMBERS, _LISTS)
_HEADER = st.text(st.sampled_from(string.ascii_letters + string.digits + " /*;=,.-+\"'q"),
                  max_size=40).map(str.strip)
_NAMES = ("window", "viewport", "width", "height", "quality", "accept")


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=st.lists(st.tuples(st.sampled_from(_NAMES), _VALUE), max_size=4),
       accept=st.one_of(st.none(), _HEADER, st.sampled_from([JPEG, PNG, GIF, "*/*", "image/*"])),
       target=st.sampled_from(["frame rendered", "instance rendered", "instance thumbnail",
                               "study thumbnail", "frames/2 thumbnail"]))
@example(params=[("window", "1e308,1e308")], accept=None, target="frame rendered")
@example(params=[("window", "-1e308,1e-308,linear-exact")], accept=None, target="frame rendered")
@example(params=[("viewport", "1,1,15,15,-300,-300")], accept=None, target="frame rendered")
@example(params=[("viewport", "300,1,0,0,1,16")], accept=PNG, target="instance rendered")
@example(params=[("accept", "image/png;q=abc")], accept=None, target="frame rendered")
@example(params=[], accept="image/png;;", target="frame rendered")
@example(params=[("quality", "\u0661\u0660")], accept=None, target="frame rendered")
def test_arbitrary_parameters_never_5xx(multi, http, params, accept, target):
    level, resource = target.split()
    url = {"frame": multi.frame_url(1), "instance": multi.url, "study": multi.study_url,
           "frames/2": multi.frame_url(2)}[level] + "/" + resource
    headers = multi.h(**({"Accept": accept} if accept is not None else {}))
    response = get(url, headers, http, params=params)
    assert response.status_code in (200, 400, 406), (params, accept, response.status_code,
                                                     response.text[:200])
    if response.status_code == 200:
        assert response.headers["Content-Type"] in (JPEG, PNG, GIF)
        image = Image.open(io.BytesIO(response.content))
        image.load()
        assert image.format == FORMATS[response.headers["Content-Type"]]
    else:
        error_json(response, response.status_code)
