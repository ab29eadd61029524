"""LiteVNA: a self-hosted DICOMweb image store.

The Cython kernels in ext/ are optional: where Cython or a C compiler is
missing (or LITEVNA_NO_EXT=1), the package installs with its numpy twins and
``litevna doctor`` reports which path is active.
"""

import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extensions if possible; never fail the install over them."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure means "pure path"
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc)

    def _skip(self, exc):
        sys.stderr.write(f"litevna: building the C kernels failed ({exc}); using numpy\n")


def extensions():
    if os.environ.get("LITEVNA_NO_EXT"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("litevna: Cython not available; using numpy kernels\n")
        return []
    return cythonize(
        [Extension("litevna._render", ["ext/_render.pyx"],
                   extra_compile_args=["-O3", "-fno-math-errno"])],
        quiet=True,
    )


setup(
    name="litevna",
    version="0.1.0",
    description="Self-hosted DICOMweb image store (STOW, QIDO, WADO) on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["litevna", "litevna.*"]) + ["twisted.plugins"],
    package_data={"litevna": ["index/schema/*/*.sql", "ui/templates/*.html", "ui/static/*"]},
    include_package_data=True,
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    install_requires=[
        "twisted>=24.7",
        "klein>=24.8",
        "pydicom>=3.0",
        "numpy>=1.26",
        "pillow>=10",
        "cryptography>=42",
        "pyjwt>=2.8",
        "orjson>=3.9",
        "txredisapi>=1.4",
        "jinja2>=3.1",
        "prometheus-client>=0.17",
        "psycopg[binary]>=3.1",
        "psycopg-pool>=3.1",
        "zope.interface>=6",
        "isal>=1.6",
        "pylibjpeg>=2", "pylibjpeg-libjpeg>=2", "pylibjpeg-openjpeg>=2", "pylibjpeg-rle>=2",
        "pyjpegls>=1.2",
    ],
    entry_points={"console_scripts": ["litevna = litevna.cli:main"]},
)
