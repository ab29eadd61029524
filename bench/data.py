"""Synthetic DICOM data and streaming multipart bodies for the benchmarks.

A *part* is either a ``Path`` (streamed from disk) or a list of bytes-like
chunks. Parts are never concatenated: bodies are produced chunk by chunk and
their length is computed up front from the part lengths.
"""
from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
CHUNK = 1 << 20
PART_CONTENT_TYPE = "application/dicom"


# --------------------------------------------------------------------------- headers

def _ct_header(study_uid: str, series_uid: str, frame_uid: str, rows: int, cols: int) -> Dataset:
    """A realistic CT header (everything but the per-slice fields and PixelData)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240315"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AcquisitionTime = ds.ContentTime = "101742.250000"
    ds.AccessionNumber = "ACC20240315001"
    ds.Modality = "CT"
    ds.Manufacturer = "LiteVNA Bench"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "Referrer^Robert"
    ds.StationName = "CT01"
    ds.StudyDescription = "CT CHEST ABDOMEN PELVIS W CONTRAST"
    ds.SeriesDescription = "AXIAL 1.0 SOFT TISSUE"
    ds.ManufacturerModelName = "Synthetic 64"
    ds.PatientName = "Bench^Patient^Q"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate = "19620704"
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.PatientWeight = "71.5"
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500.0"
    ds.SoftwareVersions = "1.0"
    ds.ReconstructionDiameter = "360.0"
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595.0"
    ds.GantryDetectorTilt = "0.0"
    ds.TableHeight = "160.0"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "280"
    ds.Exposure = "140"
    ds.FilterType = "BODY FILTER"
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = "3"
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [round(360.0 / cols, 6), round(360.0 / rows, 6)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1500"]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _set_slice(ds: Dataset, index: int, sop_uid: str) -> None:
    z = round(-100.0 - index * 1.0, 2)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = str(index + 1)
    ds.ImagePositionPatient = ["-180.0", "-180.0", str(z)]
    ds.SliceLocation = str(z)


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LITEVNA_BENCH"
    return meta


def _encode(ds: Dataset, sop_uid: str) -> bytes:
    ds.file_meta = _file_meta(sop_uid)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- pixels

def phantom(index: int, n: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Stored int16 values (HU + 1024) of an elliptical body phantom slice."""
    rng = np.random.default_rng(seed * 100_003 + index)
    y, x = np.ogrid[-1:1:rows * 1j, -1:1:cols * 1j]
    t = index / max(n - 1, 1)
    hu = np.full((rows, cols), -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 < 1
    hu[body] = 40.0                                             # soft tissue
    for cx in (-0.38, 0.38):                                    # lungs shrink along z
        lung = ((x - cx) / (0.28 * (1.2 - t))) ** 2 + ((y + 0.05) / 0.42) ** 2 < 1
        hu[lung & body] = -850.0
    hu[(x / 0.09) ** 2 + ((y - 0.35) / 0.09) ** 2 < 1] = 700.0  # spine
    hu[((x - 0.05) / 0.07) ** 2 + (y / 0.07) ** 2 < 1] = 180.0  # contrast-filled aorta
    hu += rng.normal(0.0, 12.0, hu.shape)
    return np.clip(hu + 1024.0, -32768, 32767).astype("<i2")


def _pixel_element(pixels: bytes) -> list[bytes]:
    """(7FE0,0010) OW with explicit little-endian length, then the pixel bytes."""
    return [b"\xe0\x7f\x10\x00OW\x00\x00" + len(pixels).to_bytes(4, "little"), pixels]


# --------------------------------------------------------------------------- CT series

def ct_series(n: int = 300, rows: int = 512, cols: int = 512) -> Iterator[bytes]:
    """Part 10 bytes of a realistic CT series, generated once into the cache."""
    for path in ct_series_files(n, rows, cols):
        yield path.read_bytes()


def ct_series_files(n: int = 300, rows: int = 512, cols: int = 512) -> list[Path]:
    """Paths of the cached CT series (generated on first use)."""
    directory = CACHE_DIR / f"ct-{n}-{rows}x{cols}"
    if not (directory / "COMPLETE").exists():
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        ds = _ct_header(generate_uid(), generate_uid(), generate_uid(), rows, cols)
        for i in range(n):
            uid = generate_uid()
            _set_slice(ds, i, uid)
            ds.PixelData = phantom(i, n, rows, cols).tobytes()
            (tmp / f"{i:05d}.dcm").write_bytes(_encode(ds, uid))
        (tmp / "COMPLETE").touch()
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    return sorted(directory.glob("*.dcm"))


# --------------------------------------------------------------------------- big study

class SyntheticStudy:
    """``count`` CT instances of ``rows``x``cols``, built on the fly.

    A few distinct pixel payloads are reused; every instance gets its own SOP
    Instance UID, InstanceNumber and slice position. The header is encoded once
    by pydicom with fixed-width placeholders that are patched per instance
    (UIDs from ``generate_uid(entropy_srcs=...)`` are always 64 characters;
    IS/DS values are space padded), so every part has the same length, the
    body length is known up front, and building a part costs microseconds.
    Only one instance's header exists at a time; payloads are shared.
    """

    _UID = "1.2.3." + "4" * 58
    _IS, _IPP_Z, _LOC = "987654321987", "-8765.4321987", "-7654.3219876"

    def __init__(self, count: int, rows: int = 512, cols: int = 512,
                 distinct_payloads: int = 4, seed: str = "litevna-bench") -> None:
        self.count, self.seed = count, seed
        self._payloads = [phantom(i * 7, distinct_payloads * 7, rows, cols).tobytes()
                          for i in range(distinct_payloads)]
        ds = _ct_header(self._uid("study"), self._uid("series"), self._uid("frame"), rows, cols)
        ds.SOPInstanceUID = self._UID
        ds.InstanceNumber = self._IS
        ds.ImagePositionPatient = ["-180.0", "-180.0", self._IPP_Z]
        ds.SliceLocation = self._LOC
        self._template = _encode(ds, self._UID)
        self._slots = {marker: [m.start() for m in re.finditer(re.escape(marker.encode()), self._template)]
                       for marker in (self._UID, self._IS, self._IPP_Z, self._LOC)}
        assert [len(v) for v in self._slots.values()] == [2, 1, 1, 1], self._slots
        self.part_size = len(self._template) + sum(map(len, _pixel_element(self._payloads[0])))

    @classmethod
    def of_size(cls, total_bytes: int, rows: int = 512, cols: int = 512) -> "SyntheticStudy":
        return cls(max(1, round(total_bytes / (rows * cols * 2))), rows, cols)

    def _uid(self, *entropy: object) -> str:
        return generate_uid(entropy_srcs=[self.seed, str(self.count), *map(str, entropy)])

    def _header(self, i: int) -> bytes:
        z = f"{-100.0 - i:.1f}"
        values = {self._UID: self._uid("sop", i), self._IS: str(i + 1), self._IPP_Z: z, self._LOC: z}
        header = bytearray(self._template)
        for marker, value in values.items():
            assert len(value) <= len(marker)
            for offset in self._slots[marker]:
                header[offset:offset + len(marker)] = value.ljust(len(marker), "\0" if marker == self._UID else " ").encode()
        return bytes(header)

    def lengths(self) -> Iterator[int]:
        return iter([self.part_size] * self.count)

    def parts(self) -> Iterator[list[bytes]]:
        for i in range(self.count):
            yield [self._header(i), *_pixel_element(self._payloads[i % len(self._payloads)])]


# --------------------------------------------------------------------------- multipart

def _part_head(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: {PART_CONTENT_TYPE}\r\n\r\n".encode()


def part_length(part: Path | list[bytes]) -> int:
    return part.stat().st_size if isinstance(part, Path) else sum(map(len, part))


def multipart_length(part_lengths: Iterable[int], boundary: str) -> int:
    head = len(_part_head(boundary)) + 2  # + CRLF after the part
    total = len(f"--{boundary}--\r\n")
    for n in part_lengths:
        total += head + n
    return total


def multipart_body(parts_iter: Iterable[Path | list[bytes]], boundary: str) -> Iterator[bytes]:
    """Stream a multipart/related body chunk by chunk."""
    head = _part_head(boundary)
    for part in parts_iter:
        yield head
        if isinstance(part, Path):
            with part.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        else:
            yield from part
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def content_type(boundary: str) -> str:
    return f'multipart/related; type="{PART_CONTENT_TYPE}"; boundary={boundary}'


# --------------------------------------------------------------------------- multi-frame

def multiframe_file(frames: int = 100, rows: int = 512, cols: int = 512) -> Path:
    """A cached multi-frame CT-like instance (Enhanced-style NumberOfFrames), one file."""
    path = CACHE_DIR / f"mf-{frames}-{rows}x{cols}.dcm"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        ds = _ct_header(generate_uid(), generate_uid(), generate_uid(), rows, cols)
        uid = generate_uid()
        _set_slice(ds, 0, uid)
        ds.NumberOfFrames = frames
        ds.PixelData = np.concatenate([phantom(i, frames, rows, cols) for i in range(frames)]).tobytes()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_encode(ds, uid))
        os.replace(tmp, path)
    return path
