"""Ingest: failure reasons, frame tables against pydicom, the stored attributes."""

import glob
import os
import warnings

import pydicom
from pydicom.encaps import generate_frames
from twisted.trial.unittest import SynchronousTestCase

from litevna.dicom import frames as frame_table
from litevna.dicom.ingest import IngestFailure, parse_part10
from litevna.dicom.uids import ENCAPSULATED, is_valid_uid

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


def shipped():
    return sorted(glob.glob(os.path.join(TEST_FILES, "*.dcm")))


def read_frames(path, frames):
    with open(path, "rb") as fp:
        out = []
        for fragments in frames:
            chunk = b""
            for offset, length in fragments:
                fp.seek(offset)
                chunk += fp.read(length)
            out.append(chunk)
        return out


class FrameTableTests(SynchronousTestCase):
    def test_frames_equal_pydicom(self):
        checked = 0
        for path in shipped():
            try:
                parsed = parse_part10(path)
            except IngestFailure:
                continue
            if parsed.frames is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
            ours = read_frames(path, parsed.frames)
            if parsed.transfer_syntax in ENCAPSULATED:
                expected = list(generate_frames(ds.PixelData,
                                                number_of_frames=parsed.number_of_frames))
            else:
                size = len(ours[0])
                expected = [ds.PixelData[i * size:(i + 1) * size]
                            for i in range(parsed.number_of_frames)]
            self.assertEqual(len(ours), parsed.number_of_frames, path)
            self.assertEqual(ours, expected, os.path.basename(path))
            checked += 1
        self.assertGreater(checked, 50)

    def test_pack_round_trip(self):
        frames = (((10, 20),), ((30, 5), (43, 7)))
        self.assertEqual(frame_table.unpack(frame_table.pack(frames)), frames)
        self.assertIsNone(frame_table.pack(None))


class FailureTests(SynchronousTestCase):
    def reason(self, name):
        with self.assertRaises(IngestFailure) as caught:
            parse_part10(os.path.join(TEST_FILES, name))
        return caught.exception.reason

    def test_cut_at_every_byte_of_the_tail(self):
        """Cut anywhere in the last elements (inside a header too: pydicom reads past a
        partial one without a word), the file is refused, never stored short."""
        from helpers import instance

        import io

        data = instance()
        full = pydicom.dcmread(io.BytesIO(data))
        # Where an element ends, what is left is a whole data set (without its last elements).
        ends = {raw.value_tell + raw.length for raw in full._dict.values()}
        path = os.path.join(self.mktemp())
        for cut in range(1, 560):
            if len(data) - cut in ends:
                continue
            with open(path, "wb") as fp:
                fp.write(data[:-cut])
            with self.assertRaises(IngestFailure, msg=f"cut {cut}") as caught:
                parse_part10(path)
            self.assertEqual(caught.exception.reason, 0xC000, f"cut {cut}")

    def test_reasons(self):
        self.assertEqual(self.reason("no_meta.dcm"), 0xC000)
        self.assertEqual(self.reason("MR_truncated.dcm"), 0xC000)
        self.assertEqual(self.reason("rtplan_truncated.dcm"), 0xC000)
        self.assertEqual(self.reason("badVR.dcm"), 0xC000)
        self.assertEqual(self.reason("meta_missing_tsyntax.dcm"), 0xC122)
        self.assertEqual(self.reason("no_meta_group_length.dcm"), 0x0122)
        self.assertEqual(self.reason("JPEGLSNearLossless_08.dcm"), 0xA900)

    def test_study_mismatch(self):
        with self.assertRaises(IngestFailure) as caught:
            parse_part10(os.path.join(TEST_FILES, "CT_small.dcm"), study_uid="1.2.3")
        self.assertEqual(caught.exception.reason, 0xA900)

    def test_garbage(self):
        path = self.mktemp()
        with open(path, "wb") as fp:
            fp.write(b"\x00" * 128 + b"DICM" + os.urandom(300))
        with self.assertRaises(IngestFailure):
            parse_part10(path)

    def test_unknown_transfer_syntax(self):
        ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
        ds.file_meta.TransferSyntaxUID = "1.2.3.4.5"
        path = self.mktemp()
        ds.save_as(path, enforce_file_format=False)
        with self.assertRaises(IngestFailure) as caught:
            parse_part10(path)
        self.assertEqual(caught.exception.reason, 0xC122)


class AttributeTests(SynchronousTestCase):
    def test_ct_small(self):
        parsed = parse_part10(os.path.join(TEST_FILES, "CT_small.dcm"))
        ds = pydicom.dcmread(os.path.join(TEST_FILES, "CT_small.dcm"))
        self.assertEqual(parsed.sop_instance_uid, ds.SOPInstanceUID)
        self.assertEqual(parsed.study["00100020"]["Value"], [ds.PatientID])
        self.assertEqual(parsed.series["00080060"]["Value"], [ds.Modality])
        self.assertEqual(parsed.instance["rows"], ds.Rows)
        self.assertEqual(parsed.metadata["7FE00010"]["BulkDataURI"],
                         f"litevna:/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                         f"/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010")
        with open(os.path.join(TEST_FILES, "CT_small.dcm"), "rb") as fp:
            import hashlib

            self.assertEqual(parsed.sha256, hashlib.sha256(fp.read()).hexdigest())

    def test_uid_syntax(self):
        for good in ("1.2.840.10008.1.2", "0", "1.0.2"):
            self.assertTrue(is_valid_uid(good), good)
        for bad in ("", "1..2", "01.2", "1.2.", "../etc", "1.2.abc", "1" * 65, "1.2 "):
            self.assertFalse(is_valid_uid(bad), bad)
