# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of :func:`litevna.render.kernel.window_rescale_numpy`.

Modality rescale (PS3.3 C.11.1.1.2), VOI window (PS3.3 C.11.2.1.2) and MONOCHROME1
inversion straight from the stored pixels into 8-bit output, with the GIL released
and no Python object per pixel.

Inputs of 8 or 16 bits whose values span at most a quarter as many levels as there
are pixels (a 512×512 CT frame spans a few thousand) go through a lookup table built
for the call over [min, max], each entry by the twin's own double-precision formula:
a vectorized min/max pass, then one table read per pixel, eight results per store.
Everything else gets the formula per pixel, in double precision and branch-free so
that the compiler vectorizes it.
"""
from libc.math cimport exp, floor
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Table lookup: eight entries per 64-bit store, as byte stores are the bottleneck.
       Kept scalar: GCC's SLP vectorizer turns this into slower shuffles and spills. */
    #if defined(__GNUC__) && !defined(__clang__)
    #define LITEVNA_SCALAR __attribute__((noinline, optimize("no-tree-vectorize")))
    #else
    #define LITEVNA_SCALAR
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define LITEVNA_AT(k) (56 - 8 * (k))
    #else
    #define LITEVNA_AT(k) (8 * (k))
    #endif
    #define LITEVNA_GATHER(name, T)                                                   \
    static LITEVNA_SCALAR void name(const T *src, unsigned char *dst, Py_ssize_t n,   \
                                    const unsigned char *entry) {                     \
        Py_ssize_t i = 0;                                                             \
        for (; i + 8 <= n; i += 8) {                                                  \
            uint64_t packed = (uint64_t)entry[src[i]] << LITEVNA_AT(0)                \
                | (uint64_t)entry[src[i + 1]] << LITEVNA_AT(1)                        \
                | (uint64_t)entry[src[i + 2]] << LITEVNA_AT(2)                        \
                | (uint64_t)entry[src[i + 3]] << LITEVNA_AT(3)                        \
                | (uint64_t)entry[src[i + 4]] << LITEVNA_AT(4)                        \
                | (uint64_t)entry[src[i + 5]] << LITEVNA_AT(5)                        \
                | (uint64_t)entry[src[i + 6]] << LITEVNA_AT(6)                        \
                | (uint64_t)entry[src[i + 7]] << LITEVNA_AT(7);                       \
            memcpy(dst + i, &packed, 8);                                              \
        }                                                                             \
        for (; i < n; i++) dst[i] = entry[src[i]];                                    \
    }
    LITEVNA_GATHER(litevna_gather_i8, int8_t)
    LITEVNA_GATHER(litevna_gather_u8, uint8_t)
    LITEVNA_GATHER(litevna_gather_i16, int16_t)
    LITEVNA_GATHER(litevna_gather_u16, uint16_t)
    """
    void gather_i8 "litevna_gather_i8"(const int8_t*, unsigned char*, Py_ssize_t,
                                       const unsigned char*) noexcept nogil
    void gather_u8 "litevna_gather_u8"(const uint8_t*, unsigned char*, Py_ssize_t,
                                       const unsigned char*) noexcept nogil
    void gather_i16 "litevna_gather_i16"(const int16_t*, unsigned char*, Py_ssize_t,
                                         const unsigned char*) noexcept nogil
    void gather_u16 "litevna_gather_u16"(const uint16_t*, unsigned char*, Py_ssize_t,
                                         const unsigned char*) noexcept nogil

ctypedef fused pixel_t:
    int8_t
    uint8_t
    int16_t
    uint16_t
    int32_t
    uint32_t
    float
    double

# The inputs a lookup table can serve.
ctypedef fused table_t:
    int8_t
    uint8_t
    int16_t
    uint16_t

# Window functions, numbered as in litevna.render.kernel.WINDOW_MODES.
DEF LINEAR = 0
DEF LINEAR_EXACT = 1
DEF SIGMOID = 2

# A table is worth building when it has at most one entry per LUT_RATIO pixels.
DEF LUT_RATIO = 4


cdef struct Window:
    double slope
    double intercept
    double center
    double width
    int mode
    bint invert


cdef inline unsigned char _display(double stored, const Window* w) noexcept nogil:
    """The twin's arithmetic for one value, operation for operation."""
    cdef double value = stored * w.slope + w.intercept
    cdef double y
    if w.mode == SIGMOID:
        # PS3.3 C.11.2.1.3.1
        y = 255.0 / (1.0 + exp(-4.0 * (value - w.center) / w.width))
    elif w.mode == LINEAR and w.width <= 1.0:
        # PS3.3 C.11.2.1.2.1 with width 1: a step at center - 0.5.
        y = 255.0 if value > w.center - 0.5 else 0.0
    elif w.mode == LINEAR:
        y = ((value - (w.center - 0.5)) / (w.width - 1.0) + 0.5) * 255.0
    else:
        # PS3.3 C.11.2.1.3.2
        y = ((value - w.center) / w.width + 0.5) * 255.0
    if w.invert:
        y = 255.0 - y
    if not y > 0.0:  # also NaN, which the twin's astype turns into 0
        return 0
    if y >= 255.0:
        return 255
    return <unsigned char>floor(y + 0.5)


cdef int _by_table(const table_t* src, unsigned char* dst, Py_ssize_t n,
                   const Window* w) noexcept nogil:
    """Table path for integer inputs of 16 bits or fewer; 1 if not worth it, -1 on no memory."""
    cdef Py_ssize_t i
    cdef int v, lo, hi, offset = 0
    cdef int16_t lo16, hi16, x16
    cdef unsigned char* table
    cdef unsigned char* entry
    if table_t is int8_t:
        lo, hi, offset = -128, 127, 128
    elif table_t is uint8_t:
        lo, hi = 0, 255
    else:
        # min/max in 16-bit lanes (uint16 through the sign-bit flip, as SSE2 has no unsigned min)
        if table_t is int16_t:
            offset = 32768
            lo16 = hi16 = src[0]
            for i in range(1, n):
                x16 = src[i]
                lo16 = x16 if x16 < lo16 else lo16
                hi16 = x16 if x16 > hi16 else hi16
            lo, hi = lo16, hi16
        else:
            lo16 = hi16 = <int16_t>(src[0] ^ 0x8000)
            for i in range(1, n):
                x16 = <int16_t>(src[i] ^ 0x8000)
                lo16 = x16 if x16 < lo16 else lo16
                hi16 = x16 if x16 > hi16 else hi16
            lo, hi = <uint16_t>(lo16 ^ 0x8000), <uint16_t>(hi16 ^ 0x8000)
        if (hi - lo + 1) > n // LUT_RATIO:
            return 1
    # Sized for the whole type so that entry[value] is in bounds for any value;
    # only [lo, hi] is written and read.
    table = <unsigned char*>malloc(256 if sizeof(table_t) == 1 else 65536)
    if table == NULL:
        return -1
    entry = table + offset
    for v in range(lo, hi + 1):
        entry[v] = _display(v, w)
    if table_t is int8_t:
        gather_i8(src, dst, n, entry)
    elif table_t is uint8_t:
        gather_u8(src, dst, n, entry)
    elif table_t is int16_t:
        gather_i16(src, dst, n, entry)
    else:
        gather_u16(src, dst, n, entry)
    free(table)
    return 0


cdef void _by_formula(const pixel_t* src, unsigned char* dst, Py_ssize_t n,
                      const Window* w) noexcept nogil:
    """Per-pixel path: the linear forms as one clamped y = x * a + b."""
    cdef Py_ssize_t i
    cdef double a, b, y
    if w.mode == SIGMOID or (w.mode == LINEAR and w.width <= 1.0):
        for i in range(n):
            dst[i] = _display(src[i], w)
        return
    # The clamp is exactly the standard's "below the window" / "above the window" branches.
    if w.mode == LINEAR:
        a = w.slope / (w.width - 1.0) * 255.0
        b = ((w.intercept - (w.center - 0.5)) / (w.width - 1.0) + 0.5) * 255.0
    else:
        a = w.slope / w.width * 255.0
        b = ((w.intercept - w.center) / w.width + 0.5) * 255.0
    if w.invert:
        a = -a
        b = 255.0 - b
    b += 0.5  # round half up, as the twin's floor(y + 0.5)
    for i in range(n):
        y = <double>src[i] * a + b
        y = y if y > 0.0 else 0.0
        y = y if y < 255.5 else 255.0
        dst[i] = <unsigned char><int>y


def window_rescale(const pixel_t[::1] src, unsigned char[::1] dst,
                   double slope, double intercept, double center, double width,
                   int mode, bint invert):
    """Write rescaled, windowed, optionally inverted 8-bit values of src into dst."""
    cdef Py_ssize_t n = src.shape[0]
    cdef Window w
    cdef int status = 1
    if dst.shape[0] != n:
        raise ValueError("destination has %d pixels, source %d" % (dst.shape[0], n))
    if n == 0:
        return
    w.slope, w.intercept, w.center, w.width = slope, intercept, center, width
    w.mode, w.invert = mode, invert
    with nogil:
        if pixel_t is int8_t or pixel_t is uint8_t or pixel_t is int16_t or pixel_t is uint16_t:
            status = _by_table(&src[0], &dst[0], n, &w)
        if status == 1:
            _by_formula(&src[0], &dst[0], n, &w)
    if status == -1:
        raise MemoryError()
