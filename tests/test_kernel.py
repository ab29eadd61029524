"""The compiled window/rescale kernel and its numpy twin give the same pixels."""

import os
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from twisted.trial.unittest import SynchronousTestCase

from litevna.render import kernel

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64]


class KernelTests(SynchronousTestCase):
    def test_compiled_is_built(self):
        # The test environment installs with a compiler; the fallback is tested below anyway.
        if os.environ.get("LITEVNA_PURE"):
            self.assertFalse(kernel.compiled_active())
        else:
            self.assertTrue(kernel.compiled_active(), "litevna._render was not built")

    @settings(max_examples=200, deadline=None)
    @given(data=st.data(), dtype=st.sampled_from(DTYPES),
           slope=st.floats(0.01, 10), intercept=st.floats(-2000, 2000),
           center=st.floats(-3000, 3000), width=st.floats(1, 5000),
           mode=st.sampled_from(sorted(kernel.WINDOW_MODES)), invert=st.booleans())
    def test_twins_agree(self, data, dtype, slope, intercept, center, width, mode, invert):
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        elements = (st.integers(int(info.min), int(info.max)) if info else
                    st.floats(-1e5, 1e5, width=32 if dtype == np.float32 else 64))
        pixels = data.draw(hnp.arrays(dtype, st.integers(1, 300), elements=elements))
        expected = kernel.window_rescale_numpy(pixels, slope, intercept, center, width, mode,
                                               invert)
        actual = kernel.window_rescale(pixels, slope, intercept, center, width, mode, invert)
        self.assertEqual(actual.dtype, np.uint8)
        self.assertLessEqual(int(np.abs(actual.astype(int) - expected.astype(int)).max()), 1)

    @settings(max_examples=200, deadline=None)
    @given(data=st.data(), dtype=st.sampled_from([np.int8, np.uint8, np.int16, np.uint16]),
           slope=st.floats(-10, 10).filter(lambda s: abs(s) > 1e-3),
           intercept=st.floats(-2000, 2000), center=st.floats(-3000, 3000),
           width=st.floats(0.001, 5000), mode=st.sampled_from(sorted(kernel.WINDOW_MODES)),
           invert=st.booleans())
    def test_twins_agree_on_narrow_ranges(self, data, dtype, slope, intercept, center, width,
                                          mode, invert):
        # Values spanning few levels take the compiled kernel's lookup-table path.
        if mode == "linear":
            width = max(width, 1.0)
        info = np.iinfo(dtype)
        low = data.draw(st.integers(int(info.min), int(info.max)))
        span = data.draw(st.integers(0, 64))
        high = min(int(info.max), low + span)
        pixels = data.draw(hnp.arrays(dtype, st.integers(4 * (span + 1), 2000),
                                      elements=st.integers(low, high)))
        expected = kernel.window_rescale_numpy(pixels, slope, intercept, center, width, mode,
                                               invert)
        actual = kernel.window_rescale(pixels, slope, intercept, center, width, mode, invert)
        self.assertLessEqual(int(np.abs(actual.astype(int) - expected.astype(int)).max()), 1)

    def test_frame_sized_inputs(self):
        # Both compiled paths on 512x512 frames: a CT-like range (table) and full-range noise.
        rng = np.random.default_rng(7)
        for dtype, low, high in ((np.int16, -1024, 3071), (np.uint16, 0, 4095),
                                 (np.int16, -32768, 32767), (np.uint16, 0, 65535),
                                 (np.uint8, 0, 255), (np.int32, -100000, 100000)):
            pixels = rng.integers(low, high, (512, 512), endpoint=True).astype(dtype)
            for mode in sorted(kernel.WINDOW_MODES):
                for invert in (False, True):
                    args = (pixels, 1.0, -1024.0, 40.0, 400.0, mode, invert)
                    actual = kernel.window_rescale(*args)
                    expected = kernel.window_rescale_numpy(*args)
                    self.assertEqual(actual.shape, (512, 512))
                    self.assertLessEqual(
                        int(np.abs(actual.astype(int) - expected.astype(int)).max()), 1,
                        f"{np.dtype(dtype)} [{low}, {high}] {mode} invert={invert}")

    def test_standard_linear_endpoints(self):
        # PS3.3 C.11.2.1.2.1 with center 40, width 400: below -159.5 is 0, above 239.5 is 255.
        values = np.array([-1000, -160, 240, 1000], dtype=np.int16)
        out = kernel.window_rescale(values, 1, 0, 40, 400)
        self.assertEqual(out.tolist(), [0, 0, 255, 255])

    def test_rescale_and_invert(self):
        values = np.array([0, 1000, 2000], dtype=np.uint16)
        out = kernel.window_rescale(values, 1, -1024, -24, 2000, "linear_exact", invert=True)
        self.assertEqual(out.tolist(), [255, 128, 0])

    def test_shape_and_byte_order_kept(self):
        values = np.arange(12, dtype=">i2").reshape(3, 4)
        out = kernel.window_rescale(values, 1, 0, 6, 12)
        self.assertEqual(out.shape, (3, 4))
        self.assertEqual(out.tolist(), kernel.window_rescale_numpy(values, 1, 0, 6, 12).tolist())

    def test_bad_arguments(self):
        pixels = np.zeros(4, np.int16)
        self.assertRaises(ValueError, kernel.window_rescale, pixels, 1, 0, 0, 0)
        self.assertRaises(ValueError, kernel.window_rescale, pixels, 1, 0, 0, 10, "cubic")
        self.assertRaises(TypeError, kernel.window_rescale, pixels.astype(np.complex64), 1, 0, 0, 5)

    def test_pure_path_forced(self):
        code = "from litevna.render import kernel; print(kernel.compiled_active())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, LITEVNA_PURE="1"), check=True).stdout
        self.assertEqual(out.strip(), "False")
