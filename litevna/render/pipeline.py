"""Rendered frames, instances and thumbnails (PS3.18 §8.3.5, §10.4): stored pixels to image bytes.

Pure functions over a stored Part 10 file; the route layer calls them from the CPU
thread pool and maps the exceptions below to statuses. One call reads the header
once (up to the pixel data) and decodes only the frame asked for, then:

decode (pydicom's pixel plug-ins) → modality LUT (rescale, or Modality LUT Sequence)
→ VOI (the window asked, else the data set's first window, else its VOI LUT
Sequence, else the frame's min/max) → MONOCHROME1 inversion → palette colour /
YBR to RGB → crop and scale → encode with Pillow.

Rescale, window and inversion of grey frames run in :mod:`litevna.render.kernel`.
"""

import io
import math
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels import (apply_color_lut, apply_modality_lut, apply_voi, as_pixel_options,
                            convert_color_space, get_decoder)

from litevna.dicom.frames import read_pixel_element
from litevna.dicom.uids import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
from litevna.http.headers import MediaTypeError, parse_accept
from litevna.render.kernel import WINDOW_MODES, window_rescale

#: Rendered media types (PS3.18 §8.7.4), in the order preferred when a client
#: accepts several equally: JPEG is the default.
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
DEFAULT_QUALITY = 90
#: Largest output width or height a client may ask for.
MAX_DIMENSION = 4096
THUMBNAIL_SIZE = 128
#: zlib level for PNG: on a 512×512 CT frame level 1 takes 2.0 ms against 4.9 ms for
#: Pillow's default 6, for a file 14 % larger (bench/render.py).
PNG_COMPRESS_LEVEL = 1
#: Frames larger than this are refused rather than decoded into memory.
MAX_FRAME_PIXELS = 1 << 27
#: An animation holds at most this many frames and this many output pixels in all.
MAX_ANIMATION_FRAMES = 1000
MAX_ANIMATION_PIXELS = 1 << 25
#: PS3.3 C.7.6.5 Frame Time, when the data set gives none (10 frames a second).
DEFAULT_FRAME_TIME_MS = 100.0

_PIXEL_KEYWORDS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData",
                   0x7FE00009: "DoubleFloatPixelData"}
#: The header attributes the steps below read (LUT and functional group items aside).
_HEADER_KEYWORDS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "ModalityLUTSequence", "VOILUTSequence", "FrameTime", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence")
_VOI_LUT_FUNCTIONS = {"LINEAR": "linear", "LINEAR_EXACT": "linear_exact", "SIGMOID": "sigmoid"}
#: Codecs raise anything on corrupt data, a Rust panic (pylibjpeg-rle, as pyo3's
#: PanicException) even as a BaseException: all but these become CannotRender.
_INTERRUPTS = (KeyboardInterrupt, SystemExit)
_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,30}\s*\Z", re.ASCII)


class RenderError(ValueError):
    """A rendering parameter is malformed or does not fit the image (400)."""


class FrameOutOfRange(RenderError):
    """The frame number is not one of the instance's frames."""


class CannotRender(Exception):
    """The stored pixels cannot be decoded or displayed (no pixel data, codec, colour space)."""


class NotAcceptable(Exception):
    """None of the media types the client accepts is one we render (406)."""


@dataclass(frozen=True)
class RenderParams:
    """What the client asked for; build with :func:`parse_render_params`, which validates.

    ``window`` is ``(center, width, function)`` with function one of
    :data:`litevna.render.kernel.WINDOW_MODES`. ``viewport`` is ``(vw, vh, sx, sy,
    sw, sh)``; the last four may be None (defaults: 0, 0, the rest of the image).
    ``upscale`` False keeps the output no larger than the (cropped) frame: the
    thumbnail default.
    """

    media_type: str = "image/jpeg"
    quality: int = DEFAULT_QUALITY
    window: tuple | None = None
    viewport: tuple | None = None
    width: int | None = None
    height: int | None = None
    upscale: bool = True


def parse_render_params(query, accept_header, thumbnail=False):
    """Validate the query parameters of a ``…/rendered`` or ``…/thumbnail`` request.

    ``query`` is the decoded ``(name, value)`` pairs in request order; the
    ``accept`` parameter overrides ``accept_header``. Recognised: ``accept``,
    ``window=center,width[,linear|linear-exact|sigmoid]`` (PS3.18 §8.3.5.1.4),
    ``viewport=vw,vh[,[sx],[sy],[sw],[sh]]`` (§8.3.5.1.3), ``width``, ``height``
    (fit inside that box keeping the aspect ratio; either alone fixes that side)
    and ``quality=1..100`` (JPEG only; §8.3.5.1.2). Anything else, ``_auth_token``
    among them, is ignored. A parameter given twice is an error.

    Sizes, viewport or not, are honoured when larger than the image: a client that
    asks for 1024 pixels gets 1024. No side of the output exceeds MAX_DIMENSION,
    whatever the aspect ratio. A thumbnail without viewport, width or height fits
    into 128×128 and is never enlarged.

    Raises RenderError for a malformed value, NotAcceptable when no rendered
    media type is acceptable.
    """
    given = {}
    for name, value in query:
        if name not in ("accept", "window", "viewport", "width", "height", "quality"):
            continue
        if name in given:
            raise RenderError(f"the {name} parameter is given more than once")
        given[name] = value
    media_type = _negotiate(given["accept"] if "accept" in given else accept_header)
    window = _parse_window(given["window"]) if "window" in given else None
    viewport = _parse_viewport(given["viewport"]) if "viewport" in given else None
    width = _integer(given["width"], "width", 1, MAX_DIMENSION) if "width" in given else None
    height = _integer(given["height"], "height", 1, MAX_DIMENSION) if "height" in given else None
    quality = (_integer(given["quality"], "quality", 1, 100) if "quality" in given
               else DEFAULT_QUALITY)
    upscale = True
    if thumbnail and viewport is None and width is None and height is None:
        width = height = THUMBNAIL_SIZE
        upscale = False
    return RenderParams(media_type, quality, window, viewport, width, height, upscale)


def _negotiate(accept):
    try:
        ranges = parse_accept(accept)
    except MediaTypeError as exc:
        raise RenderError(f"malformed Accept: {exc}") from None
    for media_range in ranges:
        for media_type in MEDIA_TYPES:
            if media_range.matches(media_type):
                return media_type
    raise NotAcceptable(f"cannot render as {str(accept)[:200]}; rendered media types are "
                        + ", ".join(MEDIA_TYPES))


def _integer(text, what, low, high):
    if not _INTEGER.match(text):
        raise RenderError(f"{what} must be an integer, not {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise RenderError(f"{what} must be between {low} and {high}, not {value}")
    return value


def _finite(text, what):
    try:
        value = float(text)
    except ValueError:
        raise RenderError(f"{what} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value):
        raise RenderError(f"{what} must be finite, not {text[:40]!r}")
    return value


def _parse_window(text):
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise RenderError(f"window must be center,width[,function], not {text[:80]!r}")
    center = _finite(parts[0], "window center")
    width = _finite(parts[1], "window width")
    function = parts[2].strip().lower().replace("-", "_") if len(parts) == 3 else "linear"
    if function not in WINDOW_MODES:
        raise RenderError(f"window function must be linear, linear-exact or sigmoid, "
                          f"not {parts[2][:40]!r}")
    # PS3.3 C.11.2.1.2.1 (LINEAR: width >= 1), C.11.2.1.3 (the others: width > 0).
    if width <= 0 or (function == "linear" and width < 1):
        raise RenderError(f"window width {width:g} is out of range for {function}")
    return center, width, function


def _parse_viewport(text):
    parts = text.split(",")
    if len(parts) not in (2, 6):
        raise RenderError(f"viewport must be vw,vh[,sx,sy,sw,sh], not {text[:80]!r}")
    vw = _integer(parts[0], "viewport width", 1, MAX_DIMENSION)
    vh = _integer(parts[1], "viewport height", 1, MAX_DIMENSION)
    if len(parts) == 2:
        return vw, vh, None, None, None, None
    sx, sy, sw, sh = (part if part.strip() else None for part in parts[2:])
    sx = None if sx is None else _integer(sx, "viewport sx", 0, 1 << 30)
    sy = None if sy is None else _integer(sy, "viewport sy", 0, 1 << 30)
    sw = None if sw is None else _integer(sw, "viewport sw", -(1 << 30), 1 << 30)
    sh = None if sh is None else _integer(sh, "viewport sh", -(1 << 30), 1 << 30)
    if sw == 0 or sh == 0:
        raise RenderError("viewport sw and sh must not be 0")
    return vw, vh, sx, sy, sw, sh


def render_frame(path, frame_number, params):
    """The 1-based frame_number of the Part 10 file at path, rendered and encoded.

    Raises FrameOutOfRange, RenderError (a viewport outside the image) or
    CannotRender.
    """
    with _StoredPixels(path) as stored:
        index = stored.index(frame_number)
        pixels, photometric = stored.frame(index)
        stored.select_frame(index)
        display = _display(pixels, photometric, stored.dataset, params.window)
    return _encode([_place(display, params)], params.media_type, params.quality)


def render_instance_default(path, params):
    """Instance-level ``…/rendered``: frame 1; as GIF, every frame (:func:`render_animation`)."""
    if params.media_type == "image/gif":
        return render_animation(path, params)
    return render_frame(path, 1, params)


def render_animation(path, params):
    """The frames of an instance (at most MAX_ANIMATION_FRAMES) as one animated GIF.

    Frames share one window: the asked one, else the data set's (frame 1's for
    enhanced objects), else its VOI LUT, else the min/max over all frames (found in
    a first decoding pass), so that brightness does not flicker from frame to frame.
    Frames are decoded one at a time; the animation stops early rather than hold
    more than MAX_ANIMATION_PIXELS output pixels.
    """
    with _StoredPixels(path) as stored:
        frames = range(min(stored.number_of_frames, MAX_ANIMATION_FRAMES))
        ds = stored.dataset
        stored.select_frame(0)
        window = params.window or _dataset_window(ds)
        if window is None and ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2") \
                and not _voi_lut(ds):
            slope, intercept = (1.0, 0.0) if ds.get("ModalityLUTSequence") else _rescale(ds)
            lows, highs = zip(*(_stored_range(_modality_input(pixels, ds))
                                for pixels, _ in stored.frames(frames)))
            window = _min_max_window(min(lows), max(highs), slope, intercept)
        images = []
        pixels_left = MAX_ANIMATION_PIXELS
        for pixels, photometric in stored.frames(frames):
            image = _place(_display(pixels, photometric, ds, window), params)
            pixels_left -= image.width * image.height
            if pixels_left < 0 and images:
                break
            images.append(image)
        frame_time = _first_number(ds, "FrameTime") or DEFAULT_FRAME_TIME_MS
    return _encode(images, "image/gif", params.quality, duration_ms=frame_time)


class _HeaderCache:
    """Headers read lately, by (path, size, mtime): a stored file never changes in place
    (every version of an instance is a file of its own), and reading the header is most
    of a JPEG render's cost (2.6 -> 0.8 ms for a 512×512 CT frame). A series' worth;
    not more, so that the cyclic GC has little to walk."""

    def __init__(self, size=512):
        self._entries = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key, entry):
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_HEADERS = _HeaderCache()
_CACHED_STATE = ("dataset", "decoder", "options", "number_of_frames", "_pixel_start")


class _StoredPixels:
    """A stored file opened for decoding: the header read once, frames decoded on demand."""

    def __init__(self, path):
        self._fp = open(path, "rb")
        try:
            stat = os.fstat(self._fp.fileno())
            key = (path, stat.st_size, stat.st_mtime_ns)
            cached = _HEADERS.get(key)
            if cached is not None:
                for name, value in zip(_CACHED_STATE, cached):
                    setattr(self, name, value)
                self.options = dict(self.options)
                self._source = self._fp
            else:
                self._read_header()
                if self._cacheable():
                    _HEADERS.put(key, tuple(getattr(self, n) for n in _CACHED_STATE))
        except BaseException:
            self._fp.close()
            raise

    def _cacheable(self):
        # Not deflated files (the whole data set is the source) nor enhanced objects
        # (select_frame writes each frame's values into the header).
        ds = self.dataset
        return (self._source is self._fp and "PerFrameFunctionalGroupsSequence" not in ds
                and "SharedFunctionalGroupsSequence" not in ds)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._fp.close()

    def _read_header(self):
        try:
            ds = pydicom.dcmread(self._fp, stop_before_pixels=True)
            # pydicom converts values when first read: bad ones fail here, not mid-render.
            for keyword in _HEADER_KEYWORDS:
                ds.get(keyword)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad files
            raise CannotRender(f"not a readable DICOM file: {exc}") from None
        transfer_syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if not transfer_syntax:
            raise CannotRender("the file has no transfer syntax")
        missing = [k for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel",
                               "PhotometricInterpretation") if ds.get(k) in (None, "")]
        if missing:
            raise CannotRender("no displayable pixel data: " + ", ".join(missing) + " missing")
        try:
            self.decoder = get_decoder(transfer_syntax)
        except NotImplementedError:
            raise CannotRender(f"cannot decode {transfer_syntax.name}") from None
        try:
            self.options = as_pixel_options(ds, transfer_syntax_uid=transfer_syntax)
            self.number_of_frames = int(self.options["number_of_frames"])
            samples = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
        except (TypeError, ValueError) as exc:
            raise CannotRender(f"bad image pixel attributes: {exc}") from None
        if samples > MAX_FRAME_PIXELS:
            raise CannotRender(f"a {ds.Columns}×{ds.Rows} frame is too large to render")
        self.dataset = ds
        if self.decoder.is_native and ds.BitsAllocated != 1 \
                and ds.PhotometricInterpretation != "YBR_FULL_422":
            # A read-only view on the bytes read saves a copy: no step below writes into it
            # (pydicom cannot give a view of bit-packed or 4:2:2 data, and says so in its log).
            self.options["view_only"] = True
        if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # The file is not positioned in the deflated stream: read it all instead.
            self._fp.seek(0)
            self._source = pydicom.dcmread(self._fp)
            if "PixelData" not in self._source:
                raise CannotRender("the instance has no pixel data")
            return
        element = read_pixel_element(self._fp, self._fp.tell(), transfer_syntax.is_implicit_VR,
                                     transfer_syntax.is_little_endian)
        if element is None:
            raise CannotRender("the instance has no pixel data")
        self.options["pixel_keyword"] = _PIXEL_KEYWORDS[element.tag]
        if not transfer_syntax.is_implicit_VR:
            self.options["pixel_vr"] = element.vr
        self._source = self._fp
        self._pixel_start = element.value_offset

    def index(self, frame_number):
        """The 0-based index of a 1-based frame number, checked."""
        if (isinstance(frame_number, bool) or not isinstance(frame_number, int)
                or not 1 <= frame_number <= self.number_of_frames):
            raise FrameOutOfRange(f"frame {frame_number} does not exist: the instance has "
                                  f"{self.number_of_frames} frame(s)")
        return frame_number - 1

    def _rewind(self):
        if self._source is self._fp:
            self._fp.seek(self._pixel_start)

    def frame(self, index):
        """(pixels, photometric interpretation of the decoded pixels) of one frame."""
        self._rewind()
        try:
            pixels, meta = self.decoder.as_array(self._source, index=index, raw=True,
                                                 validate=True, **self.options)
        except _INTERRUPTS:
            raise
        except BaseException as exc:  # noqa: BLE001 - see _INTERRUPTS
            raise CannotRender(f"cannot decode frame {index + 1}: {exc}") from None
        return pixels, meta["photometric_interpretation"]

    def frames(self, indices):
        """Yield (pixels, photometric) of several frames, decoded one at a time in one pass."""
        self._rewind()
        decoded = self.decoder.iter_array(self._source, indices=list(indices), raw=True,
                                          validate=True, **self.options)
        while True:
            try:
                pixels, meta = next(decoded)
            except StopIteration:
                return
            except _INTERRUPTS:
                raise
            except BaseException as exc:  # noqa: BLE001 - see _INTERRUPTS
                raise CannotRender(f"cannot decode the frames: {exc}") from None
            yield pixels, meta["photometric_interpretation"]

    def select_frame(self, index):
        """Bring the frame's functional group values up to the top level of the header.

        Enhanced objects keep rescale and window per frame or shared (PS3.3
        C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10 Frame VOI LUT); the
        steps below, and pydicom's LUT functions, read the top level.
        """
        try:
            self._select_frame(index)
        except Exception as exc:  # noqa: BLE001 - malformed functional group items
            raise CannotRender(f"bad functional groups for frame {index + 1}: {exc}") from None

    def _select_frame(self, index):
        ds = self.dataset
        items = []
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and index < len(per_frame):
            items.append(per_frame[index])
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            items.append(shared[0])
        for sequence, keywords in (
                ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
                ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction"))):
            for item in items:
                found = item.get(sequence)
                if found:
                    for keyword in keywords:
                        if keyword in found[0]:
                            setattr(ds, keyword, found[0][keyword].value)
                    break


def _display(pixels, photometric, ds, window):
    """8-bit display values: (rows, columns) grey or (rows, columns, 3) RGB."""
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim != 2:
            raise CannotRender(f"{photometric} pixel data with {pixels.shape[-1]} samples")
        return _grey(pixels, ds, window, invert=photometric == "MONOCHROME1")
    return _colour(pixels, photometric, ds)


def _grey(pixels, ds, window, invert):
    values = _modality_input(pixels, ds)
    slope, intercept = (1.0, 0.0) if ds.get("ModalityLUTSequence") else _rescale(ds)
    window = window or _dataset_window(ds)
    if window is None and _voi_lut(ds):
        return _by_voi_lut(values, slope, intercept, ds, invert)
    if window is None:
        window = _min_max_window(*_stored_range(values), slope, intercept)
    center, width, function = window
    return window_rescale(values, slope, intercept, center, width, function, invert)


def _modality_input(pixels, ds):
    """The pixels the kernel rescales: stored values, or the Modality LUT Sequence's output
    (PS3.3 C.11.1), which replaces the rescale."""
    if ds.get("ModalityLUTSequence"):
        return _lut_step(apply_modality_lut, pixels, ds)
    return pixels


def _by_voi_lut(values, slope, intercept, ds, invert):
    # PS3.3 C.11.2.1.1: the VOI LUT maps modality values, which are integers.
    if slope != 1.0 or intercept != 0.0:
        values = np.rint(values * slope + intercept).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = _lut_step(apply_voi, values, ds)
    # PS3.3 C.11.2.1.1: entries of LUT Descriptor[2] bits (8, or 10 to 16).
    bits = 8 if mapped.dtype == np.uint8 else int(ds.VOILUTSequence[0].LUTDescriptor[2])
    display = _to_8_bits(mapped, bits)
    return 255 - display if invert else display


def _lut_step(step, pixels, ds):
    """One of pydicom's LUT functions, whose errors on malformed LUT attributes are ours to
    report as CannotRender."""
    try:
        return step(pixels, ds)
    except Exception as exc:  # noqa: BLE001 - any malformed descriptor or data
        raise CannotRender(f"cannot apply the {step.__name__[6:].replace('_', ' ')}: "
                           f"{exc}") from None


def _voi_lut(ds):
    sequence = ds.get("VOILUTSequence")
    return bool(sequence) and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]


def _first_number(ds, keyword):
    value = ds.get(keyword)
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    if value in (None, ""):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _rescale(ds):
    """PS3.3 C.11.1.1.2 Rescale Slope and Intercept (identity when absent or unusable)."""
    slope = _first_number(ds, "RescaleSlope")
    intercept = _first_number(ds, "RescaleIntercept")
    return (slope if slope else 1.0), (intercept or 0.0)


def _dataset_window(ds):
    """The data set's first Window Center/Width and VOI LUT Function (PS3.3 C.11.2.1.2),
    or None when absent or out of range."""
    center = _first_number(ds, "WindowCenter")
    width = _first_number(ds, "WindowWidth")
    if center is None or width is None:
        return None
    function = _VOI_LUT_FUNCTIONS.get(str(ds.get("VOILUTFunction") or "LINEAR").strip().upper(),
                                      "linear")
    if width <= 0 or (function == "linear" and width < 1):
        return None
    return center, width, function


def _stored_range(values):
    if values.dtype.kind == "f":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
        if not (math.isfinite(low) and math.isfinite(high)):
            return 0.0, 0.0
        return low, high
    return int(values.min()), int(values.max())


def _min_max_window(low, high, slope, intercept):
    """A LINEAR_EXACT window putting the lowest modality value at 0 and the highest at 255
    (a constant frame is black before any inversion)."""
    low, high = sorted((low * slope + intercept, high * slope + intercept))
    width = high - low if high > low else 1.0
    return low + width / 2, width, "linear_exact"


def _to_8_bits(values, bits):
    """Values of 0 … 2**bits - 1 scaled, rounded, to 0 … 255."""
    if values.dtype == np.uint8 and bits == 8:
        return values
    maximum = (1 << bits) - 1
    clipped = np.clip(values, 0, maximum).astype(np.uint64)
    return ((clipped * 255 + maximum // 2) // maximum).astype(np.uint8)


def _colour(pixels, photometric, ds):
    if photometric == "PALETTE COLOR":
        # PS3.3 C.7.6.3.1.5: entries of 8 or 16 bits, which pydicom returns as uint8 / uint16.
        rgb = _lut_step(apply_color_lut, pixels, ds)
        return _to_8_bits(rgb, 8 if rgb.dtype == np.uint8 else 16)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise CannotRender(f"{photometric} pixel data without 3 samples per pixel")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        # Decoded with raw=True so that the YBR → RGB step (PS3.3 C.7.6.3.1.2) is ours.
        if pixels.dtype != np.uint8:
            raise CannotRender(f"{photometric} with more than 8 bits per sample")
        return convert_color_space(pixels, "YBR_FULL", "RGB")
    if photometric == "RGB":
        return _to_8_bits(pixels, int(ds.get("BitsStored") or ds.BitsAllocated))
    raise CannotRender(f"cannot display {photometric} pixel data")


def _place(display, params):
    """Crop (viewport source region) and scale into a Pillow image."""
    if params.viewport is not None:
        display = _source_region(display, *params.viewport[2:])
    rows, columns = display.shape[:2]
    scales = []
    if params.viewport is not None:
        scales += [params.viewport[0] / columns, params.viewport[1] / rows]
    if params.width is not None:
        scales.append(params.width / columns)
    if params.height is not None:
        scales.append(params.height / rows)
    if not params.upscale:
        scales.append(1.0)
    # One side fixed by width or height must not drag the other past MAX_DIMENSION.
    scale = min(min(scales, default=1.0), MAX_DIMENSION / columns, MAX_DIMENSION / rows)
    image = Image.fromarray(np.ascontiguousarray(display))
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    if size != image.size:
        # reducing_gap=2: a box reduction first, then Lanczos; about twice as fast for
        # thumbnails and, per Pillow, indistinguishable from Lanczos alone.
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image


def _source_region(display, sx, sy, sw, sh):
    """PS3.18 §8.3.5.1.3: the sw × sh region at (sx, sy); a negative sw or sh flips it.

    A region reaching past the image is cut at its edge.
    """
    rows, columns = display.shape[:2]
    sx, sy = sx or 0, sy or 0
    if sx >= columns or sy >= rows:
        raise RenderError(f"the viewport source region starts at ({sx}, {sy}), outside the "
                          f"{columns}×{rows} image")
    sw = columns - sx if sw is None else sw
    sh = rows - sy if sh is None else sh
    region = display[sy:sy + abs(sh), sx:sx + abs(sw)]
    if sw < 0:
        region = region[:, ::-1]
    if sh < 0:
        region = region[::-1]
    return region


def _encode(images, media_type, quality, duration_ms=None):
    out = io.BytesIO()
    first = images[0]
    if media_type == "image/png":
        first.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif media_type == "image/gif":
        extra = {}
        if len(images) > 1:
            extra = {"save_all": True, "append_images": images[1:], "loop": 0,
                     "duration": duration_ms}
        first.save(out, "GIF", **extra)
    else:
        first.save(out, "JPEG", quality=quality)
    return out.getvalue()
