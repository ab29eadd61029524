"""The web UI in a real browser (headless Chromium driven by Playwright): sign up, make a
store and a key, STOW with the key, make a token, browse the study and scroll the viewer.

Screenshots of every step go to $LITEVNA_TEST_ARTIFACTS, else <repo>/test-artifacts/.
Without Playwright or Chromium the test is skipped, except under CI, where it fails.
"""

import os
import shutil

import numpy
import pytest
import requests

from helpers import dataset, multipart, multipart_type, new_uid, part10, referenced
from live import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = os.environ.get("LITEVNA_TEST_ARTIFACTS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 667}
PASSWORD = "correct horse battery"
#: Long enough for a cold render in the CPU pool; short enough to fail fast.
WAIT_MS = 15_000


def _in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (Debian's), never one Playwright downloads."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "Playwright for Python is not installed"
    else:
        problem = None if os.access(CHROMIUM, os.X_OK) else f"no Chromium at {CHROMIUM}"
    if problem:
        if _in_ci():
            pytest.fail(problem + " (CI must run the browser test)")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("browser-data")) as server:
        yield server


def phantom(rows, frame):
    """A CT-like slice in HU: air, a body of soft tissue with a bone ring, two lungs."""
    y, x = numpy.mgrid[0:rows, 0:rows] / (rows - 1) * 2 - 1
    radius = numpy.hypot(x, y * 1.25)
    pixels = numpy.full((rows, rows), -1000, numpy.int16)
    pixels[radius < 0.9] = 40
    pixels[(radius > 0.78) & (radius < 0.9)] = 700
    for side in (-0.38, 0.38):
        pixels[numpy.hypot((x - side) / 0.28, y / (0.45 - 0.05 * frame)) < 1] = -800
    return pixels


def study_instances(study_uid):
    """Two CT instances of one series: InstanceNumber 1 (one frame), 2 (three frames)."""
    series_uid = study_uid + ".1"
    common = {"study_uid": study_uid, "series_uid": series_uid, "rows": 96, "columns": 96,
              "PatientName": "Doe^Jane", "PatientID": "BROWSER-1", "StudyDate": "20240131",
              "StudyDescription": "Chest CT (browser test)", "SeriesNumber": 3,
              "SeriesDescription": "Axial 5 mm"}
    single = dataset(InstanceNumber=1, **common)
    single.PixelData = phantom(96, 0).tobytes()
    multi = dataset(InstanceNumber=2, frames=3, **common)
    multi.PixelData = numpy.stack([phantom(96, f) for f in (1, 2, 3)]).tobytes()
    return [part10(single), part10(multi)]


class Steps:
    """A page, and a screenshot of it after each step, numbered in order."""

    def __init__(self, page, prefix):
        self.page = page
        self.prefix = prefix
        self.count = 0
        self.errors = []
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name):
        self.count += 1
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.page.screenshot(path=os.path.join(ARTIFACTS, f"{self.prefix}-{self.count:02d}-{name}.png"),
                             full_page=True)

    def image_loaded(self, selector):
        self.page.wait_for_function(
            "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
            arg=selector)

    def fits_width(self):
        return self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_sign_up_to_viewer(chromium, live):
    context = chromium.new_context(viewport=DESKTOP)
    steps = Steps(context.new_page(), "desktop")
    page = steps.page
    label = f"browser-{os.getpid()}"

    page.goto(live.url + "/")
    assert page.url == live.url + "/login"
    steps.shot("login")
    page.click("text=Sign up")
    page.fill("input[name=email]", "browser@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Sign up')")
    page.wait_for_url(live.url + "/ui/stores")
    assert "browser@example.org" in page.text_content("header")
    steps.shot("stores")

    page.fill("input[name=label]", label)
    page.click("button:has-text('Create store')")
    page.wait_for_url(f"{live.url}/ui/stores/{label}")
    assert page.text_content("#dicomweb-url") == f"{live.url}/{label}/dicomweb"
    steps.shot("store")

    page.fill("#create-key input[name=name]", "browser test")
    page.click("button:has-text('Create key')")
    key = page.text_content("#new-key-value").strip()
    assert key.startswith("eyJ") and page.is_visible("[data-copy=new-key-value]")
    steps.shot("key-created")

    study = new_uid()
    boundary = "litevna-browser-test"
    stored = requests.post(f"{live.url}/{label}/dicomweb/studies", timeout=30,
                           data=multipart(study_instances(study), boundary),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": multipart_type(boundary)})
    assert stored.status_code == 200 and len(referenced(stored.json())) == 2, stored.text

    page.click("button:has-text('Create token')")
    assert page.text_content("#new-token-value").strip().startswith("eyJ")
    (cookie,) = [c for c in context.cookies() if c["name"] == "litevna-token"]
    assert cookie["path"] == f"/{label}/" and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    steps.shot("token-created")

    page.click("#new-token >> text=Browse studies")
    page.wait_for_url(f"{live.url}/ui/stores/{label}/studies")
    page.wait_for_selector(f".study[data-study='{study}']")
    row = page.text_content(".study")
    assert "Doe, Jane" in row and "BROWSER-1" in row and "2024-01-31" in row
    assert "Chest CT (browser test)" in row and "CT" in row and "2 instances" in row
    steps.image_loaded(".study .thumb")
    steps.shot("studies")

    page.fill("input[name=PatientName]", "Nobody")
    page.press("input[name=PatientName]", "Enter")
    page.wait_for_selector("text=No study matches.")
    page.fill("input[name=PatientName]", "doe")  # a prefix, any case
    page.press("input[name=PatientName]", "Enter")
    page.wait_for_selector(f".study[data-study='{study}']")

    page.click(".study-head")
    page.wait_for_selector(".series")
    assert "Axial 5 mm" in page.text_content(".series")
    steps.image_loaded(".series .thumb")
    steps.shot("series")

    page.click("text=Open viewer")
    page.wait_for_url(f"{live.url}/ui/stores/{label}/viewer?*")
    page.wait_for_selector("#frame[data-frame='1']")
    steps.image_loaded("#frame")
    assert page.text_content("#counter").startswith("Frame 1 / 4")
    steps.shot("viewer")

    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#frame[data-frame='3']")
    assert page.text_content("#counter") == "Frame 3 / 4 (instance 2, frame 2/3)"
    page.hover("#stage")
    page.mouse.wheel(0, 100)
    page.wait_for_selector("#frame[data-frame='4']")
    page.click("button:has-text('Lung')")
    page.wait_for_function("() => document.querySelector('#frame').src.endsWith("
                           "'/frames/3/rendered?window=-600,1500')")
    steps.image_loaded("#frame")
    assert page.get_attribute("button:has-text('Lung')", "aria-pressed") == "true"
    steps.shot("viewer-lung")
    page.eval_on_selector("#slider", "s => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_selector("#frame[data-frame='1']")
    assert "window=-600,1500" in page.get_attribute("#frame", "src")
    box = page.locator("#stage").bounding_box()
    middle = box["x"] + box["width"] / 2
    page.mouse.move(middle, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(middle, box["y"] + 130, steps=3)  # 12 px a frame: two down
    page.mouse.up()
    page.wait_for_selector("#frame[data-frame='3']")

    phone = chromium.new_context(viewport=PHONE, storage_state=context.storage_state(),
                                 is_mobile=True, has_touch=True)
    small = Steps(phone.new_page(), "phone")
    small.page.goto(f"{live.url}/ui/stores/{label}/studies")
    small.page.wait_for_selector(f".study[data-study='{study}']")
    small.image_loaded(".study .thumb")
    assert small.fits_width()
    small.shot("studies")
    small.page.goto(f"{live.url}/ui/stores/{label}")
    assert small.fits_width()
    small.shot("store")
    small.page.goto(page.url)
    small.image_loaded("#frame")
    assert small.fits_width()
    small.shot("viewer")
    phone.close()

    page.click("button:has-text('Log out')")
    page.wait_for_url(live.url + "/login")
    page.goto(f"{live.url}/ui/stores/{label}")
    assert page.url == live.url + "/login"
    assert steps.errors == [] and small.errors == []
    context.close()


def test_study_browser_pages_through_results(chromium, live):
    """55 studies: 50 on the first page, 5 on the next (the QIDO Warning says more)."""
    with requests.Session() as api:
        signed_up = api.post(live.url + "/accounts", timeout=30,
                             json={"email": "pager@example.org", "password": PASSWORD})
        csrf = {"X-CSRF-Token": signed_up.json()["csrfToken"]}
        label = f"pager-{os.getpid()}"
        api.post(live.url + "/image-stores", json={"label": label}, headers=csrf, timeout=30)
        key = api.post(f"{live.url}/image-stores/{label}/api-keys", json={}, headers=csrf,
                       timeout=30).json()["value"]
        token = api.post(f"{live.url}/image-stores/{label}/tokens/create", timeout=30,
                         json={"api_key_value": key}).json()["token"]
        session = api.cookies["litevna-session"]
    boundary = "litevna-pager-test"
    parts = [part10(dataset(rows=8, columns=8, PatientName=f"Page^{n:02d}"))
             for n in range(55)]
    stored = requests.post(f"{live.url}/{label}/dicomweb/studies", timeout=60,
                           data=multipart(parts, boundary),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": multipart_type(boundary)})
    assert stored.status_code == 200, stored.text
    context = chromium.new_context(viewport=DESKTOP)
    context.add_cookies([
        {"name": "litevna-session", "value": session, "url": live.url},
        {"name": "litevna-token", "value": token, "domain": "127.0.0.1", "path": f"/{label}/"}])
    steps = Steps(context.new_page(), "pager")
    page = steps.page
    page.goto(f"{live.url}/ui/stores/{label}/studies")
    page.wait_for_selector("#pager:visible")
    assert page.locator(".study").count() == 50 and page.text_content("#range") == "1–50"
    assert page.is_disabled("#previous") and page.is_enabled("#next")
    page.click("#next")
    page.wait_for_selector("#range:has-text('51–55')")
    assert page.locator(".study").count() == 5 and page.is_disabled("#next")
    assert "offset=50" in page.url  # a reload stays on this page
    steps.shot("second-page")
    page.click("#previous")
    page.wait_for_selector("#range:has-text('1–50')")
    assert steps.errors == []
    context.close()


def test_study_browser_without_a_token_says_so(chromium, live):
    context = chromium.new_context(viewport=DESKTOP)
    steps = Steps(context.new_page(), "no-token")
    page = steps.page
    page.goto(live.url + "/signup")
    page.fill("input[name=email]", "no-token@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Sign up')")
    page.fill("input[name=label]", f"no-token-{os.getpid()}")
    page.click("button:has-text('Create store')")
    page.click("text=Browse studies")
    page.wait_for_selector("#need-token:visible")
    assert page.is_visible("text=create a token for this store first")
    steps.shot("studies")
    context.close()
