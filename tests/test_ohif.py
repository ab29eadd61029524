"""The real OHIF v3 viewer (npm package @ohif/app, prebuilt) against a live server, cross-origin.

OHIF's ``dist/`` is served statically on one loopback port, LiteVNA runs on another; OHIF's
app-config.js has one ordinary DICOMweb data source whose roots are
``http://127.0.0.1:PORT/{label}/key_T/dicomweb`` (the token travels in the path, SPEC §3) and no
flag made up for this server. Headless Chromium (software WebGL through SwiftShader) opens the
study list, which must show the stored study, then the viewer, whose viewport must draw the
image. Every failed request to the server is a test failure.

The dist comes from ``tests/ohif/fetch.sh`` (version pinned in ``tests/ohif/VERSION``), found
through ``LITEVNA_TEST_OHIF_DIST`` or the fetch script's default cache path. Missing dist,
Playwright or Chromium: a failure when ``CI=1``, a skip otherwise. Screenshots go to
``$LITEVNA_TEST_ARTIFACTS`` (default ``<repo>/test-artifacts/``) under ``ohif/<variant>/``.
"""

import functools
import http.server
import io
import json
import math
import os
import re
import shutil
import threading
import time
import uuid

import numpy
import pytest
import requests

from helpers import dataset, multipart, multipart_type, new_uid, part10, provision
from live import LiveServer, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "ohif", "VERSION")) as _fp:
    OHIF_VERSION = _fp.read().strip()

LABEL = "ohif"
PATIENT_NAME = "Litevna^Ohif"
PATIENT_ID = "LV-OHIF-0001"
STUDY_DESCRIPTION = "LiteVNA OHIF smoke CT"
SERIES_DESCRIPTION = "Axial phantom"
ROWS = COLUMNS = 128
SLICES = 3

CHROMIUM_ARGS = [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
    "--no-sandbox",
]


def _unavailable(why):
    """A missing prerequisite fails the test on CI and skips it elsewhere."""
    if os.environ.get("CI") in ("1", "true", "True"):
        pytest.fail(f"{why} (CI=1: the OHIF test must run)", pytrace=False)
    pytest.skip(why)


def ohif_dist():
    cache = os.environ.get("LITEVNA_OHIF_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "litevna", "ohif")
    dist = os.environ.get("LITEVNA_TEST_OHIF_DIST") or os.path.join(
        cache, f"dist-{OHIF_VERSION}")
    if not os.path.isfile(os.path.join(dist, "index.html")):
        _unavailable(f"no OHIF {OHIF_VERSION} dist at {dist}: run tests/ohif/fetch.sh "
                     "or set LITEVNA_TEST_OHIF_DIST")
    return dist


def chromium_executable():
    """Debian's Chromium (or $LITEVNA_TEST_CHROMIUM); None means Playwright's own browser."""
    explicit = os.environ.get("LITEVNA_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir(variant):
    base = os.environ.get("LITEVNA_TEST_ARTIFACTS") or os.path.join(
        os.path.dirname(HERE), "test-artifacts")
    path = os.path.join(base, "ohif", variant)
    os.makedirs(path, exist_ok=True)
    return path


# --- the study -----------------------------------------------------------------------------

def phantom(index):
    """Stored values (HU + 1024) of a slice: air, a soft-tissue body with a gradient, a bone
    ring and a slice-dependent bright disc, so that every slice has a plain visible structure."""
    y, x = numpy.mgrid[0:ROWS, 0:COLUMNS].astype(numpy.float64)
    cy, cx = (ROWS - 1) / 2, (COLUMNS - 1) / 2
    r = numpy.hypot(y - cy, x - cx)
    hu = numpy.full((ROWS, COLUMNS), -1000.0)
    body = r < ROWS * 0.42
    hu[body] = -100 + 250 * (x[body] / COLUMNS)
    hu[(r > ROWS * 0.34) & (r < ROWS * 0.40)] = 800
    angle = 2 * math.pi * index / SLICES
    dy, dx = cy + ROWS * 0.18 * math.sin(angle), cx + ROWS * 0.18 * math.cos(angle)
    hu[numpy.hypot(y - dy, x - dx) < ROWS * 0.08] = 400
    return numpy.rint(hu + 1024).astype(numpy.int16)


def ct_series():
    """(study UID, [Part 10 bytes]) of a small axial CT series with realistic attributes."""
    study_uid = new_uid()
    series_uid = new_uid()
    frame_of_reference = new_uid()
    instances = []
    for index in range(SLICES):
        ds = dataset(
            study_uid=study_uid, series_uid=series_uid, rows=ROWS, columns=COLUMNS,
            PatientName=PATIENT_NAME, PatientID=PATIENT_ID, PatientBirthDate="19700101",
            PatientSex="O", StudyDate="20240517", StudyTime="101500",
            AccessionNumber="LVOHIF1", StudyID="1", ReferringPhysicianName="",
            StudyDescription=STUDY_DESCRIPTION, SeriesDescription=SERIES_DESCRIPTION,
            SeriesNumber=1, InstanceNumber=index + 1, SeriesDate="20240517",
            SeriesTime="101500", ContentDate="20240517", ContentTime="101500",
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], Manufacturer="LiteVNA tests",
            BodyPartExamined="PHANTOM", PatientPosition="HFS", KVP=120,
            FrameOfReferenceUID=frame_of_reference, PositionReferenceIndicator="",
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            ImagePositionPatient=[-(COLUMNS / 2), -(ROWS / 2), -5.0 * index],
            SliceLocation=-5.0 * index, SliceThickness=5, PixelSpacing=[1, 1],
            RescaleIntercept=-1024, RescaleSlope=1, RescaleType="HU",
            WindowCenter=40, WindowWidth=400)
        ds.PixelData = phantom(index).tobytes()
        instances.append(part10(ds))
    return study_uid, instances


# --- a static server for OHIF's dist -------------------------------------------------------

class _OhifHandler(http.server.SimpleHTTPRequestHandler):
    """OHIF's dist, /app-config.js from the test, index.html for the SPA's routes."""

    protocol_version = "HTTP/1.1"
    app_config = b""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript",
                      ".mjs": "text/javascript", ".json": "application/json"}

    def do_GET(self):
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        local = self.translate_path(path)
        if not os.path.exists(local) and "." not in path.rsplit("/", 1)[-1]:
            self.path = "/index.html"  # a client-side route (/viewer, /local, …)
        super().do_GET()

    def log_message(self, *args):
        pass


class OhifSite:
    """OHIF's dist on a free loopback port; ``config`` is the app-config.js it serves."""

    def __init__(self, dist):
        self.handler = type("Handler", (_OhifHandler,), {"app_config": b""})
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", free_port()), functools.partial(self.handler, directory=dist))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def configure(self, text):
        self.handler.app_config = text.encode()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ohif_site(ohif):
    site = OhifSite(ohif)
    yield site
    site.close()


@pytest.fixture(scope="module")
def ohif():
    return ohif_dist()


# --- the server, its store and the study ---------------------------------------------------

@pytest.fixture(scope="module")
def litevna(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ohif-data")
    key = provision(data_dir, LABEL)
    live = LiveServer(data_dir)
    live.start()
    live.key = key
    yield live
    live.stop()


@pytest.fixture(scope="module")
def study(litevna):
    study_uid, instances = ct_series()
    boundary = uuid.uuid4().hex
    response = requests.post(
        f"{litevna.url}/{LABEL}/dicomweb/studies", data=multipart(instances, boundary),
        headers={"Authorization": f"Bearer {litevna.key}",
                 "Content-Type": multipart_type(boundary),
                 "Accept": "application/dicom+json"}, timeout=60)
    assert response.status_code == 200, response.text
    return study_uid


@pytest.fixture(scope="module")
def dicomweb_root(litevna):
    return f"{litevna.url}/{LABEL}/key_{litevna.key}/dicomweb"


# Data-source flags beyond the three roots. Each is an ordinary OHIF flag with a value OHIF's
# own configurations use for a full DICOMweb server (platform/app/public/config/default.js and
# local_dcm4chee.js of OHIF 3.x); none is made up for this server. Two variants, so that both
# ways OHIF fetches thumbnails and both spellings of its multipart Accept header are exercised.
VARIANTS = {
    # Thumbnails drawn from WADO-RS frames; Accept: multipart/related; type="…"; transfer-syntax=*
    "wadors": {
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "bulkDataURI": {"enabled": True},
    },
    # local_dcm4chee.js: thumbnails from …/thumbnail, unquoted Accept parameters.
    "thumbnail": {
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "thumbnail",
        "thumbnailRequestStrategy": "fetch",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "singlepart": "pdf,video",
        "bulkDataURI": {"enabled": True},
        "omitQuotationForMultipartRequest": True,
    },
}


def app_config(dicomweb_root, flags):
    """OHIF's app-config.js: the shape of its own default, one DICOMweb data source (us)."""
    config = {
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": True,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "litevna",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "litevna",
            "configuration": {
                "friendlyName": "LiteVNA",
                "name": "litevna",
                "wadoUriRoot": dicomweb_root,
                "qidoRoot": dicomweb_root,
                "wadoRoot": dicomweb_root,
                **flags,
            },
        }],
    }
    return "/** @type {AppTypes.Config} */\nwindow.config = " + json.dumps(config, indent=2) + ";\n"


# --- the browser ---------------------------------------------------------------------------

def redact(url):
    """A URL with its path token shown as key_T (the report stays readable)."""
    return re.sub(r"/key_[^/\s]+/", "/key_T/", url)


class Traffic:
    """What the page did: console errors, page errors, and every request to the server."""

    def __init__(self, server_url):
        self.server_url = server_url
        self.console_errors = []
        self.page_errors = []
        self.responses = []  # playwright Response objects from the server
        self.failed = []  # (request, failure text) of requests to the server that never ended

    def attach(self, page):
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(
            redact(f"{msg.text} @ {msg.location.get('url', '')}:"
                   f"{msg.location.get('lineNumber', '')}")))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _ours(self, url):
        return url.startswith(self.server_url + "/")

    def _response(self, response):
        if self._ours(response.url):
            self.responses.append(response)

    def _failed(self, request):
        if self._ours(request.url):
            self.failed.append((request, request.failure))

    def errors(self):
        return [r for r in self.responses if r.status >= 400]

    def report(self):
        lines = [f"{len(self.responses)} responses from the server:"]
        for response in self.responses:
            lines.append(f"  {response.status} {response.request.method} "
                         f"{redact(response.url)}  [Accept: "
                         f"{response.request.headers.get('accept')} -> "
                         f"{response.headers.get('content-type')}]")
        for response in self.errors():
            request = response.request
            try:
                body = response.text()[:600]
            except Exception as exc:  # noqa: BLE001 — the body may be gone already
                body = f"<body unavailable: {exc}>"
            lines += [f"FAILED {response.status} {request.method} {redact(response.url)}",
                      f"  request headers: {request.headers}",
                      f"  response headers: {response.headers}",
                      f"  response body: {body}"]
        for request, failure in self.failed:
            lines += [f"NO RESPONSE {request.method} {redact(request.url)}: {failure}",
                      f"  request headers: {request.headers}"]
        lines.append(f"console errors: {json.dumps(self.console_errors, indent=1)}")
        lines.append(f"page errors: {json.dumps(self.page_errors, indent=1)}")
        return "\n".join(lines)


# In the page: the cornerstone viewport canvases, how much their pixels vary, the grey level at
# their centre and a fingerprint of their content (to see the slice change).
CANVAS_STATS = """() => {
  const canvases = [...new Set(document.querySelectorAll(
      '.cornerstone-viewport-element canvas, .viewport-element canvas, canvas.cornerstone-canvas'))];
  return canvases.map(canvas => {
    const out = {width: canvas.width, height: canvas.height, cls: canvas.className};
    try {
      const copy = document.createElement('canvas');
      copy.width = canvas.width; copy.height = canvas.height;
      const ctx = copy.getContext('2d');
      ctx.drawImage(canvas, 0, 0);
      const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
      let n = 0, sum = 0, sum2 = 0, lit = 0, print = 0;
      for (let i = 0; i < data.length; i += 4 * 7) {  // every 7th pixel is plenty
        const grey = (data[i] + data[i + 1] + data[i + 2]) / 3;
        n++; sum += grey; sum2 += grey * grey; if (grey > 16) lit++;
        print = (print * 31 + Math.round(grey)) % 1000000007;
      }
      const mean = sum / n;
      out.mean = mean; out.std = Math.sqrt(Math.max(sum2 / n - mean * mean, 0));
      out.lit = lit / n; out.print = print;
      const c = ctx.getImageData(Math.floor(copy.width / 2) - 2, Math.floor(copy.height / 2) - 2,
                                 5, 5).data;
      let centre = 0;
      for (let i = 0; i < c.length; i += 4) centre += (c[i] + c[i + 1] + c[i + 2]) / 3;
      out.centre = centre / 25;
    } catch (e) { out.error = String(e); }
    return out;
  });
}"""

# The phantom's centre is soft tissue (25 HU), which the data set's window (40/400) maps to
# grey (25 + 160) / 400 * 255 = 118: a canvas showing that is showing this image.
CENTRE_GREY = (25 + 160) / 400 * 255
DRAWN = (f"() => ({CANVAS_STATS})().some(c => c.width > 0 && c.std > 5 && c.lit > 0.05"
         f" && Math.abs(c.centre - {CENTRE_GREY}) < 30)")


def click_if_there(page, name):
    """Dismiss one of OHIF's own notices (investigational-use banner, tour) if it is shown."""
    button = page.get_by_role("button", name=name)
    try:
        if button.count():
            button.first.click(timeout=2_000)
    except Exception:  # noqa: BLE001 — a notice is not what this test is about
        pass


def wait_until(page, traffic, check, seconds, what):
    """Poll check() until it is true; give up at once when the server has refused a request
    (OHIF then often waits forever), or after the timeout."""
    deadline = time.monotonic() + seconds
    while not check():
        if traffic.errors() or traffic.failed:
            raise AssertionError(f"the server failed a request before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting until {what}")
        page.wait_for_timeout(250)


def grey_stats(png):
    """(mean, standard deviation) of a PNG's grey levels, with Pillow if it is there."""
    try:
        from PIL import Image
    except ImportError:
        return None
    grey = numpy.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=numpy.float64)
    return grey.mean(), grey.std()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ohif_lists_and_draws_the_study(litevna, study, ohif_site, dicomweb_root, variant):
    ohif_site.configure(app_config(dicomweb_root, VARIANTS[variant]))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed")
    executable = chromium_executable()
    out = artifacts_dir(variant)
    traffic = Traffic(litevna.url)
    started = time.monotonic()

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 — no browser on this machine
            _unavailable(f"cannot launch Chromium ({executable or 'Playwright bundled'}): {exc}")
        context = browser.new_context(viewport={"width": 1400, "height": 900},
                                      service_workers="block")
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            traffic.attach(page)
            try:
                # The study list: a QIDO-RS search through the path token, cross-origin.
                page.goto(ohif_site.url + "/", wait_until="domcontentloaded")
                row = page.get_by_text(STUDY_DESCRIPTION, exact=False).first
                wait_until(page, traffic, row.is_visible, 30, "the study list shows the study")
                phases = {"study list": time.monotonic() - started}
                click_if_there(page, "Confirm and hide")
                page.wait_for_timeout(300)
                page.screenshot(path=os.path.join(out, "study-list.png"), full_page=True)
                listed = page.inner_text("body")
                # OHIF shows PN "Family^Given" as "Family, Given"; the study's accession,
                # modality, date and instance count come from the QIDO-RS study attributes.
                for shown in ("Litevna, Ohif", STUDY_DESCRIPTION, "LVOHIF1", "CT",
                              "17-May-2024"):
                    assert shown in listed, f"{shown!r} not in the study list:\n{listed[:2000]}"

                # The viewer: metadata, then frames through WADO-RS, drawn by cornerstone.
                page.goto(f"{ohif_site.url}/viewer?StudyInstanceUIDs={study}",
                          wait_until="domcontentloaded")
                try:
                    wait_until(page, traffic, lambda: page.evaluate(DRAWN), 40,
                               "the viewport draws the image")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; canvases: {page.evaluate(CANVAS_STATS)}")
                phases["viewer drawn"] = time.monotonic() - started
                click_if_there(page, "Skip all")
                page.wait_for_timeout(500)  # let the overlays and thumbnails settle
                stats = page.evaluate(CANVAS_STATS)
                page.screenshot(path=os.path.join(out, "viewer.png"))
                viewport = page.locator(".cornerstone-viewport-element, .viewport-element").first
                shot = viewport.screenshot(path=os.path.join(out, "viewport.png"))
                on_screen = grey_stats(shot)
                viewer_text = page.inner_text("body")

                # Scroll to the next slice: its disc is elsewhere, so the canvas changes.
                box = viewport.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                before = [c.get("print") for c in stats]
                page.mouse.wheel(0, 120)
                try:
                    page.wait_for_function(
                        f"() => ({CANVAS_STATS})().some(c => c.std > 5 && "
                        f"!{json.dumps(before)}.includes(c.print))", polling=250, timeout=10_000)
                except Exception as exc:
                    raise AssertionError("scrolling did not show another slice") from exc
                phases["next slice"] = time.monotonic() - started
                page.screenshot(path=os.path.join(out, "viewer-slice-2.png"))
            except Exception as exc:  # a timeout or an assertion: say what the page saw
                try:
                    page.screenshot(path=os.path.join(out, "failure.png"))
                except Exception:  # noqa: BLE001
                    pass
                raise AssertionError(f"{exc}\n{traffic.report()}\n--- server log ---\n"
                                     f"{litevna.log()[-6000:]}") from exc
            report = traffic.report()  # while the browser still holds the response bodies
        finally:
            context.close()
            browser.close()

    timings = ", ".join(f"{name} at {seconds:.1f} s" for name, seconds in phases.items())
    print(f"\nOHIF {OHIF_VERSION} ({variant}) against {redact(dicomweb_root)}: "
          f"{time.monotonic() - started:.1f} s in the browser ({timings}); canvases {stats}; "
          f"viewport screenshot grey mean/std {on_screen}; screenshots in {out}")
    print(report)
    assert traffic.errors() == [] and traffic.failed == [], report
    # A page error, or a console error about the server (CORS, a failed fetch), is ours too;
    # OHIF's other console noise (WebGL, its own warnings) is printed above, not judged.
    about_us = [e for e in traffic.console_errors
                if litevna.url in e or "CORS" in e or "Failed to fetch" in e]
    assert traffic.page_errors == [] and about_us == [], report
    # What OHIF asked for, by kind: each must have been asked and answered.
    paths = [re.sub(r"^.*?/dicomweb", "", r.url.split("?")[0]) for r in traffic.responses]
    kinds = {
        "QIDO-RS studies": r"/studies",
        "QIDO-RS series": r"/studies/[\d.]+/series",
        "WADO-RS metadata": r"/studies/[\d.]+/series/[\d.]+/metadata",
        "WADO-RS frames": r"/studies/[\d.]+/series/[\d.]+/instances/[\d.]+/frames/1",
    }
    if variant == "thumbnail":
        kinds["WADO-RS thumbnail"] = r"/studies/[\d.]+/series/[\d.]+(/instances/[\d.]+)?/thumbnail"
    missing = [kind for kind, pattern in kinds.items()
               if not any(re.fullmatch(pattern, path) for path in paths)]
    assert missing == [], f"OHIF never asked for {missing}:\n" + report
    if on_screen is not None:
        assert on_screen[1] > 5, f"the viewport screenshot is blank: {on_screen}"
    assert SERIES_DESCRIPTION in viewer_text or "Axial" in viewer_text, viewer_text[:2000]
    assert "Traceback" not in litevna.log()
