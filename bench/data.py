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


# --------------------------------------------------------------------------- QIDO archive

FAMILY_NAMES = [  # the 50 most frequent US family names; share of patients falls linearly 3 % → 1 %
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ",
    "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE",
    "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ",
    "LEWIS", "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN",
    "HILL", "FLORES", "GREEN", "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL",
    "CARTER", "ROBERTS",
]
GIVEN_NAMES = {
    "M": ["JAMES", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "CHARLES",
          "DANIEL", "MATTHEW", "ANTHONY", "MARK", "PAUL", "STEVEN", "ANDREW", "KENNETH", "KEVIN"],
    "F": ["MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH",
          "KAREN", "NANCY", "LISA", "BETTY", "MARGARET", "SANDRA", "ASHLEY", "EMILY", "DONNA"],
}
# modality: (share of studies, study descriptions, series descriptions)
MODALITIES = {
    "CT": (35, ["CT CHEST W CONTRAST", "CT HEAD WO CONTRAST", "CT ABDOMEN PELVIS W CONTRAST",
                "CT ANGIO CHEST PE PROTOCOL", "CT SPINE LUMBAR WO CONTRAST"],
           ["AXIAL 1.0 SOFT TISSUE", "AXIAL 5.0 LUNG", "CORONAL MPR", "SAGITTAL MPR", "SCOUT"]),
    "MR": (25, ["MR BRAIN W WO CONTRAST", "MR KNEE LEFT WO CONTRAST", "MR LUMBAR SPINE WO CONTRAST",
                "MR PROSTATE MULTIPARAMETRIC"],
           ["T1 SAG", "T2 AX", "FLAIR AX", "DWI", "T1 POST GD AX"]),
    "US": (15, ["US ABDOMEN COMPLETE", "US PELVIS TRANSVAGINAL", "US THYROID", "US CAROTID DOPPLER"],
           ["B-MODE", "COLOR DOPPLER", "CINE"]),
    "CR": (15, ["XR CHEST 2 VIEWS", "XR KNEE 3 VIEWS", "XR HAND LEFT"], ["PA", "LAT", "AP"]),
    "MG": (5, ["MG SCREENING BILATERAL", "MG DIAGNOSTIC LEFT"], ["L CC", "R CC", "L MLO", "R MLO"]),
    "PT": (5, ["PET CT WHOLE BODY FDG"], ["PET AC", "PET NAC", "CT ATTENUATION"]),
}
FIRST_STUDY_DAY = 735599  # date(2015, 1, 1).toordinal(); studies spread over ten years


class QidoStudy:
    """The study-level attributes of one synthetic study and the UIDs of its series."""

    __slots__ = ("index", "uid", "patient", "date", "time", "accession", "description",
                 "referring", "series")

    def __init__(self, **kw) -> None:
        for name, value in kw.items():
            setattr(self, name, value)


class QidoArchive:
    """A deterministic synthetic archive for QIDO-RS: ``studies`` × ``series`` × ``per_series``.

    Patients (≈0.3 per study, at least one), names, dates, accession numbers, modalities and
    descriptions come from ``random.Random`` seeded by ``seed``; UIDs from
    ``generate_uid(entropy_srcs=...)``: the same arguments always give the same bytes. The
    instances are tiny CT images (8×8 int16, Explicit VR Little Endian): one header per series
    is encoded by pydicom, the per-instance fields are patched in at fixed width.
    """

    _UID = SyntheticStudy._UID
    _IS, _IPP_Z = "987654321987", "-8765.4321987"

    def __init__(self, studies: int, series: int = 3, per_series: int = 10, seed: str = "litevna-qido",
                 rows: int = 8, cols: int = 8) -> None:
        import random
        from datetime import date

        self.count, self.series_per_study, self.per_series = studies, series, per_series
        self.seed, self.rows, self.cols = seed, rows, cols
        rng = random.Random(f"{seed}:patients")
        weights = [3.0 - 2.0 * i / (len(FAMILY_NAMES) - 1) for i in range(len(FAMILY_NAMES))]
        n_patients = max(1, round(studies * 0.3))
        ids = rng.sample(range(1_000_000, 10_000_000), n_patients)
        self.patients = []
        for pid in ids:
            sex = rng.choice("MF")
            name = f"{rng.choices(FAMILY_NAMES, weights)[0]}^{rng.choice(GIVEN_NAMES[sex])}"
            if rng.random() < 0.3:
                name += "^" + rng.choice("ABCDEFGHJKLMNPRSTW")
            birth = date.fromordinal(rng.randrange(date(1930, 1, 1).toordinal(), date(2020, 1, 1).toordinal()))
            self.patients.append({"id": f"MRN{pid}", "name": name, "sex": sex, "birth": birth.strftime("%Y%m%d")})
        physicians = [f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES[rng.choice('MF')])}"
                      for _ in range(40)]
        kinds = list(MODALITIES)
        shares = [MODALITIES[m][0] for m in kinds]
        self.studies = []
        for i in range(studies):
            r = random.Random(f"{seed}:study:{i}")
            patient = self.patients[i] if i < n_patients else r.choice(self.patients)
            day = date.fromordinal(FIRST_STUDY_DAY + r.randrange(3653))
            modality = r.choices(kinds, shares)[0]
            series_list = []
            for s in range(series):
                m = modality if s < 2 or r.random() < 0.8 else r.choice(kinds)
                series_list.append({"uid": self._uid("series", i, s), "number": s + 1, "modality": m,
                                    "description": r.choice(MODALITIES[m][2])})
            self.studies.append(QidoStudy(
                index=i, uid=self._uid("study", i), patient=patient, date=day.strftime("%Y%m%d"),
                time=f"{r.randrange(7, 20):02d}{r.randrange(60):02d}{r.randrange(60):02d}",
                accession=f"A{day.year % 100:02d}{i:07d}", description=r.choice(MODALITIES[modality][1]),
                referring=r.choice(physicians), series=series_list))
        self.pixels = phantom(0, 1, rows, cols).tobytes()
        self._template_key: tuple[int, int] | None = None

    @property
    def instances(self) -> int:
        return self.count * self.series_per_study * self.per_series

    def _uid(self, *entropy: object) -> str:
        return generate_uid(entropy_srcs=[self.seed, *map(str, entropy)])

    def _series_template(self, study: QidoStudy, s: int) -> tuple[bytes, dict[str, list[int]]]:
        if self._template_key != (study.index, s):
            series = study.series[s]
            ds = _ct_header(study.uid, series["uid"], self._uid("frame", study.index), self.rows, self.cols)
            p = study.patient
            ds.PatientName, ds.PatientID = p["name"], p["id"]
            ds.PatientSex, ds.PatientBirthDate = p["sex"], p["birth"]
            age = int(study.date[:4]) - int(p["birth"][:4]) - (study.date[4:] < p["birth"][4:])
            ds.PatientAge = f"{max(age, 0):03d}Y"
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.date
            ds.StudyTime = study.time
            ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{study.time}.{s:06d}"
            ds.AccessionNumber = study.accession
            ds.StudyDescription = study.description
            ds.ReferringPhysicianName = study.referring
            ds.StudyID = str(study.index + 1)
            ds.Modality = series["modality"]
            ds.SeriesDescription = series["description"]
            ds.SeriesNumber = str(series["number"])
            ds.BodyPartExamined = "CHEST"
            ds.SOPInstanceUID = self._UID
            ds.InstanceNumber = self._IS
            ds.ImagePositionPatient = ["-180.0", "-180.0", self._IPP_Z]
            ds.SliceLocation = self._IPP_Z
            template = _encode(ds, self._UID) + b"".join(_pixel_element(self.pixels))
            slots = {m: [x.start() for x in re.finditer(re.escape(m.encode()), template)]
                     for m in (self._UID, self._IS, self._IPP_Z)}
            assert [len(v) for v in slots.values()] == [2, 1, 2], slots
            self._template, self._slots, self._template_key = template, slots, (study.index, s)
        return self._template, self._slots

    def sop_uid(self, study: int, series: int, instance: int) -> str:
        return self._uid("sop", study, series, instance)

    def instance(self, k: int) -> bytes:
        """Part 10 bytes of instance ``k`` (0 ≤ k < instances), study-major order."""
        per_study = self.series_per_study * self.per_series
        study, rest = divmod(k, per_study)
        s, j = divmod(rest, self.per_series)
        template, slots = self._series_template(self.studies[study], s)
        z = f"{-100.0 - j:.1f}"
        out = bytearray(template)
        for marker, value, pad in ((self._UID, self.sop_uid(study, s, j), "\0"),
                                   (self._IS, str(j + 1), " "), (self._IPP_Z, z, " ")):
            assert len(value) <= len(marker)
            for offset in slots[marker]:
                out[offset:offset + len(marker)] = value.ljust(len(marker), pad).encode()
        return bytes(out)

    def batches(self, size: int, start: int = 0) -> Iterator[list[bytes]]:
        """Instances ``start…`` in lists of ``size`` (one list is built when asked for)."""
        for first in range(start, self.instances, size):
            yield [self.instance(k) for k in range(first, min(first + size, self.instances))]
