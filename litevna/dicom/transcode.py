"""Decoding stored instances when a client asks for another transfer syntax (CPU pool only).

pydicom's pixel plug-ins (pylibjpeg, openjpeg, pyjpegls, RLE) do the codec work.
"""

import io

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from litevna.dicom.uids import ENCAPSULATED, EXPLICIT_VR_BIG_ENDIAN


class CannotTranscode(Exception):
    """The stored data cannot be given in the asked transfer syntax (406)."""


def to_explicit_little_endian(path):
    """The Part 10 bytes of the instance at path in Explicit VR Little Endian."""
    try:
        dataset = pydicom.dcmread(path)
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        if transfer_syntax in ENCAPSULATED:
            dataset.decompress()
        elif transfer_syntax == EXPLICIT_VR_BIG_ENDIAN and "PixelData" in dataset:
            pixels = dataset.pixel_array
            dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = io.BytesIO()
        dataset.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
        return out.getvalue()
    except Exception as exc:  # noqa: BLE001 - any codec or conversion failure means "not acceptable"
        raise CannotTranscode(f"cannot convert to Explicit VR Little Endian: {exc}") from None


def decoded_frame(path, index):
    """Frame ``index`` (0-based) of the instance at path as native little-endian bytes."""
    try:
        from pydicom.pixels import pixel_array

        array = pixel_array(path, index=index)
        return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    except Exception as exc:  # noqa: BLE001
        raise CannotTranscode(f"cannot decode frame {index + 1}: {exc}") from None
