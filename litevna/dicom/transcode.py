"""Decoding stored instances when a client asks for another transfer syntax (CPU pool only).

pydicom's pixel plug-ins (pylibjpeg, openjpeg, pyjpegls, RLE) do the codec work.
"""

import io

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from litevna.dicom.uids import ENCAPSULATED, EXPLICIT_VR_BIG_ENDIAN


class CannotTranscode(Exception):
    """The stored data cannot be given in the asked transfer syntax (406)."""


def can_convert(transfer_syntax, number_of_frames):
    """Whether an instance stored in transfer_syntax can be given as Explicit VR LE.

    Answered before a response starts, so that a study holding (say) MPEG video is a
    406 rather than a connection cut half way; data that is corrupt despite a known
    codec can still only fail mid-stream."""
    if transfer_syntax not in ENCAPSULATED or not number_of_frames:
        return True
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax).is_available
    except NotImplementedError:
        return False


_SWAP = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def to_explicit_little_endian(path):
    """The Part 10 bytes of the instance at path in Explicit VR Little Endian.

    The SOP Instance UID is kept: this is the same instance in another encoding."""
    try:
        dataset = pydicom.dcmread(path)
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        for element in dataset.iterall():  # raw elements take their VRs (a file may lie)
            pass
        if transfer_syntax in ENCAPSULATED:
            dataset.decompress(generate_instance_uid=False)
        elif transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
            _swap_binary_values(dataset)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.set_original_encoding(False, True)  # every value is decoded: re-encode it
        out = io.BytesIO()
        dataset.save_as(out, implicit_vr=False, little_endian=True, enforce_file_format=True)
        return out.getvalue()
    except Exception as exc:  # noqa: BLE001 - any codec or conversion failure means "not acceptable"
        raise CannotTranscode(f"cannot convert to Explicit VR Little Endian: {exc}") from None


def _swap_binary_values(dataset):
    """Big-endian OW/OL/OF/OD/OV values to little-endian, in place (numbers pydicom
    has already decoded to Python values; these stay as raw bytes)."""
    import numpy

    if "PixelData" in dataset and dataset["PixelData"].VR != "OB":
        # Same layout, each sample's bytes reversed; samples under 16 bits travel in OW words.
        element = dataset["PixelData"]
        size = max(2, int(dataset.get("BitsAllocated") or 16) // 8)
        raw = element.value
        whole = len(raw) - len(raw) % size
        element.value = numpy.frombuffer(raw, f">u{size}", whole // size).astype(
            f"<u{size}").tobytes() + raw[whole:]
    for element in dataset.iterall():
        size = _SWAP.get(element.VR)
        if size and element.tag != 0x7FE00010 and isinstance(element.value, bytes) and \
                len(element.value) % size == 0:
            element.value = numpy.frombuffer(element.value, f">u{size}").astype(
                f"<u{size}").tobytes()


def decoded_frame(path, index):
    """Frame ``index`` (0-based) of the instance at path as native little-endian bytes."""
    from pydicom.pixels import pixel_array

    try:
        array = pixel_array(path, index=index)  # reads only the one frame
    except Exception:  # noqa: BLE001 - e.g. a file whose encoding lies: read it all
        try:
            dataset = pydicom.dcmread(path)
            array = dataset.pixel_array
            if int(dataset.get("NumberOfFrames") or 1) > 1:
                array = array[index]
            elif index:
                raise IndexError(f"frame {index + 1} is out of range") from None
        except Exception as exc:  # noqa: BLE001 - any codec failure means "not acceptable"
            raise CannotTranscode(f"cannot decode frame {index + 1}: {exc}") from None
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
