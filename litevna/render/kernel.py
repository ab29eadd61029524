"""Modality rescale + VOI window + inversion to 8 bits: the rendering hot kernel.

The compiled extension ``litevna._render`` (built from ``ext/_render.pyx``) and
the numpy function below implement the same arithmetic; the numpy one is the
fallback where no compiler was available and the oracle the tests compare the
compiled one against. ``LITEVNA_PURE=1`` forces the numpy path.
"""

import os

import numpy as np

try:
    from litevna import _render
except ImportError:  # no compiler at install time: the numpy twin serves
    _render = None

if os.environ.get("LITEVNA_PURE"):
    _render = None

#: Window function names of PS3.3 C.11.2.1.3 (VOILUTFunction), lower-cased.
WINDOW_MODES = {"linear": 0, "linear_exact": 1, "sigmoid": 2}

_DTYPES = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                  np.float32, np.float64)}


def compiled_active():
    """True when the Cython kernel is the one in use."""
    return _render is not None


def window_rescale(pixels, slope=1.0, intercept=0.0, center=None, width=None,
                   mode="linear", invert=False):
    """Map stored pixel values to 8-bit display values.

    ``slope``/``intercept`` are the Modality LUT rescale (PS3.3 C.11.1.1.2),
    ``center``/``width``/``mode`` the VOI window (PS3.3 C.11.2.1.2), and
    ``invert`` flips the result for MONOCHROME1. Returns a new uint8 array of
    the same shape.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype.newbyteorder("=") not in _DTYPES:
        raise TypeError(f"unsupported pixel type {pixels.dtype}")
    if mode not in WINDOW_MODES:
        raise ValueError(f"unknown window function {mode!r}")
    if width is None or center is None:
        raise ValueError("a window center and width are required")
    if width <= 0 or (mode == "linear" and width < 1):
        raise ValueError(f"window width {width} is out of range")
    if _render is None:
        return window_rescale_numpy(pixels, slope, intercept, center, width, mode, invert)
    src = np.ascontiguousarray(pixels).reshape(-1)
    if not src.dtype.isnative:
        src = src.astype(src.dtype.newbyteorder("="))
    out = np.empty(src.shape[0], dtype=np.uint8)
    _render.window_rescale(src, out, float(slope), float(intercept), float(center),
                           float(width), WINDOW_MODES[mode], bool(invert))
    return out.reshape(pixels.shape)


def window_rescale_numpy(pixels, slope, intercept, center, width, mode="linear", invert=False):
    """The numpy twin of the compiled kernel (same arguments, same result)."""
    values = np.asarray(pixels, dtype=np.float64) * slope + intercept
    if mode == "sigmoid":
        with np.errstate(over="ignore"):
            y = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif mode == "linear" and width <= 1:
        y = np.where(values > center - 0.5, 255.0, 0.0)
    elif mode == "linear":
        y = ((values - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    else:
        y = ((values - center) / width + 0.5) * 255.0
    if invert:
        y = 255.0 - y
    return np.floor(np.clip(y, 0.0, 255.0) + 0.5).astype(np.uint8)
