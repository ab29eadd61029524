# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of :func:`litevna.render.kernel.window_rescale_numpy`.

One pass over the stored pixels: modality rescale (PS3.3 C.11.1), VOI window
(PS3.3 C.11.2.1.2) and MONOCHROME1 inversion straight into 8-bit output, with
the GIL released and no Python object per pixel.
"""
from libc.math cimport exp

ctypedef fused pixel_t:
    signed char
    unsigned char
    short
    unsigned short
    int
    unsigned int
    float
    double

# Window functions, numbered as in litevna.render.kernel.WINDOW_MODES.
DEF LINEAR = 0
DEF LINEAR_EXACT = 1
DEF SIGMOID = 2


cdef inline unsigned char _clamp_round(float y) nogil:
    if y <= 0.0:
        return 0
    if y >= 255.0:
        return 255
    return <unsigned char>(y + 0.5)


def window_rescale(const pixel_t[::1] src, unsigned char[::1] dst,
                   double slope, double intercept, double center, double width,
                   int mode, bint invert):
    """Write rescaled, windowed, optionally inverted 8-bit values of src into dst."""
    cdef Py_ssize_t i, n = src.shape[0]
    cdef float a, b, y, x
    cdef double threshold
    cdef unsigned char lo = 255 if invert else 0
    cdef unsigned char hi = 0 if invert else 255
    if dst.shape[0] != n:
        raise ValueError("destination has %d pixels, source %d" % (dst.shape[0], n))
    if mode == LINEAR and width <= 1.0:
        # PS3.3 C.11.2.1.2.1 with width 1: a step at center - 0.5.
        threshold = center - 0.5
        with nogil:
            for i in range(n):
                dst[i] = hi if src[i] * slope + intercept > threshold else lo
        return
    if mode == SIGMOID:
        with nogil:
            for i in range(n):
                y = 255.0 / (1.0 + exp(-4.0 * ((src[i] * slope + intercept) - center) / width))
                dst[i] = _clamp_round(255.0 - y if invert else y)
        return
    # Both linear forms are y = x * a + b, clamped: the clamp is exactly the
    # standard's "below the window" / "above the window" branches.
    if mode == LINEAR:
        a = slope / (width - 1.0) * 255.0
        b = ((intercept - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    else:
        a = slope / width * 255.0
        b = ((intercept - center) / width + 0.5) * 255.0
    if invert:
        a = -a
        b = 255.0 - b
    with nogil:
        for i in range(n):
            x = <float>src[i]
            y = x * a + b
            if y < 0.0:
                y = 0.0
            elif y > 255.0:
                y = 255.0
            dst[i] = <unsigned char>(y + 0.5)
