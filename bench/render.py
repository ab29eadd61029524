"""Rendering benchmark, in process and on one thread: the window kernel, the encoders, a frame.

* **kernel**: a 512×512 int16 CT frame (``data.phantom``, stored HU + 1024) to 8 bits with
  rescale intercept -1024 and the linear window 40/400 (PS3.3 C.11.2.1.2): the Cython kernel
  (``litevna._render``), its numpy twin (float64 arithmetic), and a numpy 64 Ki-entry lookup
  table (prebuilt, and built for each call). A few other inputs show the kernel's other paths.
  Mpixel/s of the best of N calls.
* **encode**: the windowed 512×512 uint8 frame as JPEG q90 (Pillow; simplejpeg when installed)
  and PNG at zlib levels 1 and 6: ms and bytes.
* **render_frame**: one 512×512 CT instance from disk (``data.ct_series_files(1)``), header
  read + decode + window + encode, as PNG, JPEG and a 128×128 thumbnail.

    python bench/render.py [--quick]

``--servers`` is accepted (``run_all.py`` passes it to every benchmark) and ignored.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402

from litevna.render import kernel  # noqa: E402
from litevna.render.pipeline import (PNG_COMPRESS_LEVEL, parse_render_params,  # noqa: E402
                                     render_frame)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROWS = COLS = 512
SLOPE, INTERCEPT, CENTER, WIDTH = 1.0, -1024.0, 40.0, 400.0


def best_of(fn, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def numpy_lut() -> np.ndarray:
    """The window as a 64 Ki-entry table indexed by the int16 bit pattern (for np.take)."""
    stored = np.arange(65536, dtype=np.uint16).view(np.int16)
    return kernel.window_rescale_numpy(stored, SLOPE, INTERCEPT, CENTER, WIDTH)


def kernel_rows(repeats: int) -> list[dict]:
    ct = data.phantom(0, 1, ROWS, COLS)
    rng = np.random.default_rng(1)
    noise = rng.integers(-32768, 32767, (ROWS, COLS), endpoint=True).astype(np.int16)
    floats = (ct.astype(np.float32) - 1024.0)
    table = numpy_lut()
    expected = kernel.window_rescale_numpy(ct, SLOPE, INTERCEPT, CENTER, WIDTH)
    window = (SLOPE, INTERCEPT, CENTER, WIDTH)
    cases = [
        ("numpy twin (float64)", "int16 CT", repeats // 4 or 1,
         lambda: kernel.window_rescale_numpy(ct, *window)),
        ("numpy 64 Ki LUT, prebuilt", "int16 CT", repeats,
         lambda: np.take(table, ct.view(np.uint16))),
        ("numpy 64 Ki LUT, built per call", "int16 CT", repeats // 4 or 1,
         lambda: np.take(numpy_lut(), ct.view(np.uint16))),
    ]
    if kernel.compiled_active():
        cases = [
            ("Cython kernel", "int16 CT", repeats, lambda: kernel.window_rescale(ct, *window)),
            ("Cython kernel, MONOCHROME1", "int16 CT", repeats,
             lambda: kernel.window_rescale(ct, *window, invert=True)),
            ("Cython kernel, sigmoid", "int16 CT", repeats,
             lambda: kernel.window_rescale(ct, *window, mode="sigmoid")),
            ("Cython kernel, per-pixel path", "int16 full-range noise", repeats,
             lambda: kernel.window_rescale(noise, *window)),
            ("Cython kernel, per-pixel path", "float32 HU", repeats,
             lambda: kernel.window_rescale(floats, 1.0, 0.0, CENTER, WIDTH)),
        ] + cases
        agree = int(np.abs(kernel.window_rescale(ct, *window).astype(int) - expected).max())
        if agree > 1:
            raise SystemExit(f"the Cython kernel is off the numpy twin by {agree} grey levels")
    rows = []
    for name, source, n, fn in cases:
        seconds = best_of(fn, n)
        rows.append({"kernel": name, "input": source, "ms": seconds * 1e3,
                     "mpixel_per_s": ROWS * COLS / seconds / 1e6, "repeats": n})
    return rows


def encode_rows(repeats: int) -> list[dict]:
    frame = kernel.window_rescale(data.phantom(0, 1, ROWS, COLS), SLOPE, INTERCEPT, CENTER, WIDTH)
    image = Image.fromarray(frame)

    def pillow(**options):
        def run():
            out = io.BytesIO()
            image.save(out, **options)
            return out.getvalue()
        return run

    cases = [("Pillow JPEG q90", pillow(format="JPEG", quality=90)),
             ("Pillow PNG level 1", pillow(format="PNG", compress_level=1)),
             ("Pillow PNG level 6", pillow(format="PNG", compress_level=6))]
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    if simplejpeg is not None:
        grey = np.ascontiguousarray(frame[:, :, None])
        cases.append(("simplejpeg q90", lambda: simplejpeg.encode_jpeg(
            grey, quality=90, colorspace="GRAY")))
    rows = []
    for name, fn in cases:
        rows.append({"encoder": name, "ms": best_of(fn, repeats) * 1e3, "bytes": len(fn())})
    if simplejpeg is None:
        rows.append({"encoder": "simplejpeg", "ms": None, "bytes": None,
                     "note": "not installed"})
    return rows


def render_rows(repeats: int) -> list[dict]:
    path = str(data.ct_series_files(1, ROWS, COLS)[0])
    cases = [("PNG", parse_render_params([], "image/png")),
             ("JPEG q90", parse_render_params([], "image/jpeg")),
             ("thumbnail JPEG 128×128", parse_render_params([], None, thumbnail=True))]
    rows = []
    for name, params in cases:
        seconds = best_of(lambda: render_frame(path, 1, params), repeats)
        rows.append({"render_frame": name, "ms": seconds * 1e3,
                     "bytes": len(render_frame(path, 1, params))})
    return rows


def markdown(kernels: list[dict], encoders: list[dict], renders: list[dict]) -> str:
    lines = ["### Kernel: 512×512 → uint8, rescale + linear window 40/400, one thread", "",
             "| kernel | input | ms / frame | Mpixel/s |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['kernel']} | {r['input']} | {r['ms']:.3f} | {r['mpixel_per_s']:,.0f} |"
              for r in kernels]
    lines += ["", "### Encoding a 512×512 uint8 frame", "",
              "| encoder | ms | bytes |", "| --- | ---: | ---: |"]
    lines += [f"| {r['encoder']} | {r['ms']:.2f} | {r['bytes']:,} |" if r["ms"] is not None
              else f"| {r['encoder']} | {r['note']} | |" for r in encoders]
    lines += ["", f"### render_frame: a 512×512 CT instance from disk (PNG level "
              f"{PNG_COMPRESS_LEVEL})", "", "| output | ms | bytes |", "| --- | ---: | ---: |"]
    lines += [f"| {r['render_frame']} | {r['ms']:.2f} | {r['bytes']:,} |" for r in renders]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a few seconds)")
    p.add_argument("--servers", help="ignored: this benchmark runs in process")
    args = p.parse_args(argv)
    if not kernel.compiled_active():
        print("!! litevna._render is not built (or LITEVNA_PURE is set): numpy rows only",
              file=sys.stderr)
    repeats = 40 if args.quick else 400
    kernels = kernel_rows(repeats)
    encoders = encode_rows(repeats // 10)
    renders = render_rows(repeats // 10)
    table = markdown(kernels, encoders, renders)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    meta = {"benchmark": "render", "timestamp": stamp, "quick": args.quick,
            "python": sys.version, "platform": platform.platform(), "cpus": os.cpu_count(),
            "compiled": kernel.compiled_active(), "kernel": kernels, "encode": encoders,
            "render_frame": renders}
    (RESULTS_DIR / f"render-{stamp}.md").write_text(
        f"# Rendering benchmark {stamp}{' (quick)' * args.quick}\n\n{table}")
    (RESULTS_DIR / f"render-{stamp}.json").write_text(json.dumps(meta, indent=2))
    print(f"saved {RESULTS_DIR / f'render-{stamp}'}.{{md,json}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
