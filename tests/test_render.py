"""Rendering: every displayable pydicom test file against an oracle built from pydicom alone,
the parameters, and the errors."""

import glob
import io
import os
import random
import re
import warnings

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from helpers import render_oracle
from litevna.render.pipeline import (CannotRender, FrameOutOfRange, NotAcceptable, RenderError,
                                     RenderParams, parse_render_params, render_animation,
                                     render_frame, render_instance_default)

DATA = os.path.join(os.path.dirname(pydicom.__file__), "data")
PNG = RenderParams(media_type="image/png")

#: Shipped files with pixel data that cannot be shown here, and why; each must give
#: CannotRender (a 406/422), never anything else.
NOT_DISPLAYABLE = {
    "test_files/JPEG-lossy.dcm": "12-bit JPEG Extended that libjpeg rejects (misplaced marker "
                                 "segment); pydicom decodes it only with GDCM",
    "test_files/JPEG2000-embedded-sequence-delimiter.dcm": "a sequence delimiter inside the "
                                                           "J2K fragment: openjpeg cannot read it",
    "test_files/MR_truncated.dcm": "pixel data shorter than Rows × Columns",
    "test_files/badVR.dcm": "Number of Frames is '1A'",
    "test_files/nested_priv_SQ.dcm": "pixel data without the Image Pixel module's attributes",
}


def read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def shipped_with_pixels():
    """Relative paths of pydicom's shipped files (test_files, charset_files) holding pixel data."""
    found = []
    for folder in ("test_files", "charset_files"):
        for path in sorted(glob.glob(os.path.join(DATA, folder, "**", "*"), recursive=True)):
            if not os.path.isfile(path):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path, defer_size=1024)
            except Exception:  # noqa: BLE001 - not DICOM at all
                continue
            meta = getattr(ds, "file_meta", None)
            if "PixelData" in ds and meta is not None and "TransferSyntaxUID" in meta:
                found.append(os.path.relpath(path, DATA))
    return found


def decode_png(data):
    image = Image.open(io.BytesIO(data))
    return np.asarray(image)


def assert_close(case, actual, expected, label):
    case.assertEqual(actual.shape, expected.shape, label)
    diff = int(np.abs(actual.astype(int) - expected.astype(int)).max())
    case.assertLessEqual(diff, 1, f"{label}: off by {diff} grey levels")


class ShippedFileTests(SynchronousTestCase):
    """Frame 1 of every displayable shipped file, as PNG, equals the oracle within one level.

    One test per file is added below the class."""

    def check_file(self, relative):
        path = os.path.join(DATA, relative)
        if relative in NOT_DISPLAYABLE:
            self.assertRaises(CannotRender, render_frame, path, 1, PNG)
            raise SkipTest(f"not displayable (gives CannotRender): {NOT_DISPLAYABLE[relative]}")
        assert_close(self, decode_png(render_frame(path, 1, PNG)), render_oracle(read(path)), relative)

    def test_coverage(self):
        """The shipped files span what the pipeline must handle."""
        seen = set()
        for relative in shipped_with_pixels():
            if relative in NOT_DISPLAYABLE:
                continue
            ds = read(os.path.join(DATA, relative))
            seen.add(ds.PhotometricInterpretation)
            seen.add(ds.file_meta.TransferSyntaxUID.name)
            seen.add(("bits", ds.BitsAllocated, ds.PixelRepresentation))
            if int(ds.get("NumberOfFrames") or 1) > 1:
                seen.add("multi-frame")
        for wanted in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422",
                       "PALETTE COLOR", "multi-frame", ("bits", 8, 0), ("bits", 16, 0),
                       ("bits", 16, 1), "RLE Lossless", "JPEG Baseline (Process 1)",
                       "JPEG Extended (Process 2 and 4)", "JPEG-LS Lossless Image Compression",
                       "JPEG 2000 Image Compression (Lossless Only)",
                       "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 "
                       "[Selection Value 1])", "Explicit VR Big Endian",
                       "Deflated Explicit VR Little Endian"):
            self.assertIn(wanted, seen)


def _add_file_tests():
    for relative in shipped_with_pixels():
        name = "test_" + re.sub(r"\W", "_", relative)
        setattr(ShippedFileTests, name, lambda self, relative=relative: self.check_file(relative))


_add_file_tests()


def shipped(name):
    return os.path.join(DATA, "test_files", name)


class SyntheticTests(SynchronousTestCase):
    """LUT sequences, window functions and enhanced objects, which no shipped file has."""

    def variant(self, name, change):
        ds = read(shipped(name))
        change(ds)
        path = self.mktemp() + ".dcm"
        ds.save_as(path, enforce_file_format=True)
        return path, read(path)

    def check(self, name, change, params=PNG):
        path, ds = self.variant(name, change)
        assert_close(self, decode_png(render_frame(path, 1, params)), render_oracle(ds), name)
        return path

    def test_voi_lut_sequence(self):
        def change(ds):
            item = Dataset()
            item.add_new("LUTDescriptor", "SS", [4096, -1024, 12])
            item.add_new("LUTData", "US",
                         [min(4095, int(4096 * (i / 4096) ** 0.5)) for i in range(4096)])
            ds.VOILUTSequence = Sequence([item])
        self.check("CT_small.dcm", change)

    def test_modality_lut_sequence(self):
        def change(ds):
            del ds.RescaleSlope, ds.RescaleIntercept
            item = Dataset()
            item.add_new("LUTDescriptor", "US", [2048, 0, 16])
            item.ModalityLUTType = "HU"
            item.add_new("LUTData", "US", [(i * 37) % 65536 for i in range(2048)])
            ds.ModalityLUTSequence = Sequence([item])
            ds.WindowCenter, ds.WindowWidth = 30000, 40000
        self.check("CT_small.dcm", change)

    def test_sigmoid_and_linear_exact(self):
        for function in ("SIGMOID", "LINEAR_EXACT"):
            self.check("MR_small.dcm", lambda ds: setattr(ds, "VOILUTFunction", function))

    def test_monochrome1_without_window(self):
        def change(ds):
            ds.PhotometricInterpretation = "MONOCHROME1"
            del ds.WindowCenter, ds.WindowWidth
        self.check("MR_small.dcm", change)

    def test_constant_frame_is_black(self):
        def change(ds):
            ds.PixelData = bytes(len(ds.PixelData))
            del ds.WindowCenter, ds.WindowWidth
        path = self.check("MR_small.dcm", change)
        self.assertEqual(decode_png(render_frame(path, 1, PNG)).max(), 0)

    def test_asked_window_overrides_the_data_set(self):
        path = shipped("CT_small.dcm")
        params = parse_render_params([("window", "100,50,sigmoid"), ("accept", "image/png")], None)
        ds = read(path)
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 100, 50, "SIGMOID"
        assert_close(self, decode_png(render_frame(path, 1, params)), render_oracle(ds), "window")
        self.assertFalse(np.array_equal(decode_png(render_frame(path, 1, params)),
                                        decode_png(render_frame(path, 1, PNG))))

    def test_enhanced_functional_groups(self):
        def change(ds):
            shared = Dataset()
            transform = Dataset()
            transform.RescaleSlope, transform.RescaleIntercept = 2, -500
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = 300, 600
            shared.PixelValueTransformationSequence = Sequence([transform])
            shared.FrameVOILUTSequence = Sequence([voi])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
        path, ds = self.variant("MR_small.dcm", change)
        ds.RescaleSlope, ds.RescaleIntercept = 2, -500
        ds.WindowCenter, ds.WindowWidth = 300, 600
        assert_close(self, decode_png(render_frame(path, 1, PNG)), render_oracle(ds), "enhanced")


class MultiFrameTests(SynchronousTestCase):
    def test_each_frame(self):
        for name, indices in (("examples_ybr_color.dcm", (1, 17, 29)), ("rtdose.dcm", (4, 14)),
                              ("SC_rgb_rle_16bit_2frame.dcm", (1,))):
            ds = read(shipped(name))
            for index in indices:
                assert_close(self, decode_png(render_frame(shipped(name), index + 1, PNG)),
                             render_oracle(ds, index), f"{name} frame {index + 1}")

    def test_frame_out_of_range(self):
        for name, number in (("CT_small.dcm", 0), ("CT_small.dcm", 2),
                             ("examples_ybr_color.dcm", 31), ("rtdose.dcm", -1)):
            with self.assertRaises(FrameOutOfRange):
                render_frame(shipped(name), number, PNG)
        self.assertTrue(issubclass(FrameOutOfRange, RenderError))

    def test_animation(self):
        gif = RenderParams(media_type="image/gif")
        data = render_animation(shipped("examples_ybr_color.dcm"), gif)
        image = Image.open(io.BytesIO(data))
        self.assertEqual((image.format, image.size), ("GIF", (320, 240)))
        # Pillow merges identical consecutive frames, adding up their durations: 30
        # frames of Frame Time 33.333 ms, which GIF holds in hundredths of a second.
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
        self.assertLessEqual(abs(sum(durations) - 1000), 30 * 10)
        self.assertEqual(render_instance_default(shipped("rtdose.dcm"), gif)[:6], b"GIF89a")
        self.assertEqual(Image.open(io.BytesIO(
            render_instance_default(shipped("rtdose.dcm"), gif))).n_frames, 15)

    def test_instance_default_is_frame_one(self):
        path = shipped("examples_ybr_color.dcm")
        self.assertEqual(render_instance_default(path, PNG), render_frame(path, 1, PNG))
        single_gif = render_instance_default(shipped("CT_small.dcm"),
                                             RenderParams(media_type="image/gif"))
        self.assertEqual(Image.open(io.BytesIO(single_gif)).n_frames, 1)


class CannotRenderTests(SynchronousTestCase):
    def test_no_pixel_data(self):
        self.assertRaises(CannotRender, render_frame, shipped("rtplan.dcm"), 1, PNG)

    def test_not_dicom(self):
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(b"\0" * 128 + b"DICM" + b"garbage" * 50)
        self.assertRaises(CannotRender, render_frame, path, 1, PNG)

    def test_unsupported_photometric(self):
        def change(ds):
            ds.PhotometricInterpretation = "YBR_PARTIAL_420"
        ds = read(shipped("SC_rgb_small_odd.dcm"))
        change(ds)
        path = self.mktemp() + ".dcm"
        ds.save_as(path)
        self.assertRaises(CannotRender, render_frame, path, 1, PNG)


    def test_corrupt_files(self):
        # Truncated, overwritten and bit-flipped copies: never anything but CannotRender
        # or RenderError, even when a codec panics (pylibjpeg-rle's Rust code does).
        rng = random.Random(20261204)
        names = ["CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
                 "examples_palette.dcm", "MR_small_jpeg_ls_lossless.dcm", "rtdose_rle.dcm",
                 "examples_ybr_color.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm"]
        path = self.mktemp()
        for _ in range(200):
            data = bytearray(open(shipped(rng.choice(names)), "rb").read())
            start = rng.randrange(len(data))
            if rng.random() < 0.4:
                data = data[:start]
            else:
                for _ in range(rng.randint(1, 20)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            with open(path, "wb") as fp:
                fp.write(data)
            try:
                render_frame(path, rng.choice([1, 2]), PNG)
            except (CannotRender, RenderError):
                pass


class GeometryTests(SynchronousTestCase):
    """viewport, width, height and the thumbnail default (CT_small 128×128, JPEG2000 256×1024)."""

    def size(self, query, name="CT_small.dcm", thumbnail=False):
        params = parse_render_params(query + [("accept", "image/png")], None, thumbnail)
        return Image.open(io.BytesIO(render_frame(shipped(name), 1, params))).size

    def pixels(self, query, name="CT_small.dcm"):
        params = parse_render_params(query + [("accept", "image/png")], None)
        return decode_png(render_frame(shipped(name), 1, params))

    def test_width_and_height_keep_the_aspect_ratio(self):
        self.assertEqual(self.size([]), (128, 128))
        self.assertEqual(self.size([("width", "64")]), (64, 64))
        self.assertEqual(self.size([("height", "32")]), (32, 32))
        self.assertEqual(self.size([("width", "200"), ("height", "50")]), (50, 50))
        self.assertEqual(self.size([("width", "128")], "JPEG2000.dcm"), (128, 512))
        self.assertEqual(self.size([("width", "512"), ("height", "512")], "JPEG2000.dcm"),
                         (128, 512))
        self.assertEqual(self.size([("width", "300")]), (300, 300))  # asked for: enlarged
        # The other side would be 16384: both stay within 4096.
        self.assertEqual(self.size([("width", "4096")], "JPEG2000.dcm"), (1024, 4096))

    def test_viewport_scales_to_fit(self):
        self.assertEqual(self.size([("viewport", "64,64")]), (64, 64))
        self.assertEqual(self.size([("viewport", "100,50")]), (50, 50))
        self.assertEqual(self.size([("viewport", "512,512")], "JPEG2000.dcm"), (128, 512))
        self.assertEqual(self.size([("viewport", "128,128,0,0,64,32")]), (128, 64))

    def test_viewport_crops(self):
        whole = self.pixels([])
        np.testing.assert_array_equal(self.pixels([("viewport", "64,64,32,16,64,64")]),
                                      whole[16:80, 32:96])
        # Defaults: from (sx, sy) to the image's edge; a region past the edge is cut there.
        np.testing.assert_array_equal(self.pixels([("viewport", "96,96,32,32,,")]),
                                      whole[32:, 32:])
        np.testing.assert_array_equal(self.pixels([("viewport", "28,28,100,100,50,50")]),
                                      whole[100:, 100:])

    def test_viewport_negative_size_flips(self):
        whole = self.pixels([])
        np.testing.assert_array_equal(self.pixels([("viewport", "128,128,0,0,-128,")]),
                                      whole[:, ::-1])
        np.testing.assert_array_equal(self.pixels([("viewport", "64,64,0,0,-64,-64")]),
                                      whole[:64, :64][::-1, ::-1])

    def test_viewport_outside_the_image(self):
        params = parse_render_params([("viewport", "64,64,500,0,10,10")], None)
        self.assertRaises(RenderError, render_frame, shipped("CT_small.dcm"), 1, params)

    def test_thumbnail(self):
        self.assertEqual(self.size([], "693_J2KI.dcm", thumbnail=True), (128, 128))
        self.assertEqual(self.size([], "JPEG2000.dcm", thumbnail=True), (32, 128))
        self.assertEqual(self.size([], "MR_small.dcm", thumbnail=True), (64, 64))  # not enlarged
        self.assertEqual(self.size([("width", "256")], "MR_small.dcm", thumbnail=True), (256, 256))
        self.assertEqual(self.size([("viewport", "32,32")], "693_J2KI.dcm", thumbnail=True),
                         (32, 32))


class EncodingTests(SynchronousTestCase):
    def render(self, query, header=None, name="CT_small.dcm"):
        return render_frame(shipped(name), 1, parse_render_params(query, header))

    def test_media_types(self):
        self.assertEqual(self.render([])[:2], b"\xff\xd8")
        self.assertEqual(self.render([], "image/png")[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(self.render([], "image/gif")[:4], b"GIF8")
        self.assertEqual(self.render([("accept", "image/png")], "image/jpeg")[:4], b"\x89PNG")

    def test_quality(self):
        low = self.render([("quality", "10")], name="693_J2KI.dcm")
        high = self.render([("quality", "95")], name="693_J2KI.dcm")
        self.assertLess(len(low), len(high) / 2)
        self.assertEqual(Image.open(io.BytesIO(low)).size, (512, 512))
        # Lossless PNG ignores it.
        self.assertEqual(self.render([("quality", "10")], "image/png"),
                         self.render([], "image/png"))

    def test_jpeg_is_close_to_the_png(self):
        jpeg = decode_png(self.render([("quality", "100")], name="693_J2KI.dcm"))
        png = decode_png(self.render([], "image/png", name="693_J2KI.dcm"))
        self.assertLess(np.abs(jpeg.astype(int) - png).mean(), 1.5)


class ParameterTests(SynchronousTestCase):
    def test_defaults(self):
        params = parse_render_params([], None)
        self.assertEqual(params, RenderParams("image/jpeg", 90, None, None, None, None, True))
        self.assertEqual(parse_render_params([("_auth_token", "x"), ("annotation", "patient")],
                                             None), params)

    def test_values(self):
        params = parse_render_params([("window", "40,400"), ("viewport", "512,256,1,2,-30,40"),
                                      ("width", "100"), ("height", "4096"), ("quality", "1")],
                                     "image/png")
        self.assertEqual(params, RenderParams("image/png", 1, (40.0, 400.0, "linear"),
                                              (512, 256, 1, 2, -30, 40), 100, 4096, True))
        self.assertEqual(parse_render_params([("window", "-1.5,0.5,linear-exact")], None).window,
                         (-1.5, 0.5, "linear_exact"))
        self.assertEqual(parse_render_params([("window", "1,2,SIGMOID")], None).window,
                         (1.0, 2.0, "sigmoid"))
        self.assertEqual(parse_render_params([("viewport", "10,20,,5,,")], None).viewport,
                         (10, 20, None, 5, None, None))

    def test_negotiation(self):
        cases = {None: "image/jpeg", "": "image/jpeg", "*/*": "image/jpeg",
                 "image/*": "image/jpeg", "image/png": "image/png",
                 "image/webp, image/png;q=0.5, image/jpeg;q=0.4": "image/png",
                 "image/png;q=0, */*;q=0.1": "image/jpeg", "image/gif": "image/gif"}
        for header, expected in cases.items():
            self.assertEqual(parse_render_params([], header).media_type, expected, header)
        for header in ("application/dicom", "image/webp", "image/png;q=0",
                       'multipart/related; type="image/jpeg"'):
            self.assertRaises(NotAcceptable, parse_render_params, [], header)
        self.assertRaises(NotAcceptable, parse_render_params, [("accept", "text/html")],
                          "image/png")
        self.assertRaises(RenderError, parse_render_params, [], "image/png;q=high")

    def test_bad_values(self):
        bad = [("window", "abc"), ("window", "40"), ("window", "40,400,linear,1"),
               ("window", "40,0"), ("window", "40,-5"), ("window", "40,0.5"),
               ("window", "40,0.5,linear"), ("window", "40,0,sigmoid"), ("window", "40,nan"),
               ("window", "inf,40"), ("window", "40,400,cubic"),
               ("width", "0"), ("width", "-1"), ("width", "99999"), ("width", "1.5"),
               ("width", ""), ("width", "1e3"), ("height", "x"), ("height", "0"),
               ("quality", "0"), ("quality", "101"), ("quality", "x"), ("quality", "-5"),
               ("viewport", "64"), ("viewport", "64,64,1"), ("viewport", "64,64,1,2,3"),
               ("viewport", "0,64"), ("viewport", "64,-64"), ("viewport", "64,64,-1,0,10,10"),
               ("viewport", "64,64,0,0,0,10"), ("viewport", "64,64,0,0,10,x"),
               ("viewport", ",64"), ("viewport", "5000,64")]
        for name, value in bad:
            with self.assertRaises(RenderError, msg=f"{name}={value}") as caught:
                parse_render_params([(name, value)], None)
            self.assertIn(name if name != "viewport" else "viewport", str(caught.exception))
        self.assertRaises(RenderError, parse_render_params, [("width", "5"), ("width", "6")],
                          None)

    def test_linear_width_one_is_allowed(self):
        # PS3.3 C.11.2.1.2.1: a LINEAR window of width 1 is a threshold.
        self.assertEqual(parse_render_params([("window", "40,1")], None).window,
                         (40.0, 1.0, "linear"))
