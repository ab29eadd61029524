"""Our DICOM JSON equals pydicom's to_json_dict for every shipped test file."""

import glob
import os
import warnings

import pydicom
from twisted.trial.unittest import SynchronousTestCase

from litevna.dicom.jsonmodel import BULK_DATA_THRESHOLD, absolute, dataset_to_json

TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


def oracle(dataset, prefix):
    """pydicom's JSON, with our bulk data URIs (tag paths) put in by hand."""
    def walk(ds, path):
        out = {}
        for element in ds:
            key = f"{element.tag:08X}"
            if element.tag.group == 2:
                continue
            if element.VR == "SQ":
                items = [walk(item, f"{path}{key}/{i}/") for i, item in enumerate(element.value)]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            else:
                out[key] = element.to_json_dict(lambda _e, u=f"{prefix}/{path}{key}": u,
                                                BULK_DATA_THRESHOLD)
        return out
    return walk(dataset, "")


class JsonModelTests(SynchronousTestCase):
    def test_equals_pydicom_on_every_shipped_file(self):
        checked = 0
        for path in sorted(glob.glob(os.path.join(TEST_FILES, "*.dcm"))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    expected = oracle(pydicom.dcmread(path, stop_before_pixels=True, force=True), "p")
                except Exception:  # noqa: BLE001 - files pydicom itself cannot convert
                    continue
                actual = dataset_to_json(pydicom.dcmread(path, stop_before_pixels=True,
                                                         force=True), "p")
            self.assertEqual(actual, expected, os.path.basename(path))
            checked += 1
        self.assertGreater(checked, 60)

    def test_bulk_data_paths_and_absolute(self):
        ds = pydicom.Dataset()
        item = pydicom.Dataset()
        item.add_new(0x00091010, "OB", b"\x01" * 2000)
        ds.add_new(0x00400275, "SQ", [pydicom.Dataset(), item])
        document = dataset_to_json(ds, "litevna:/studies/1/series/2/instances/3/bulkdata")
        uri = document["00400275"]["Value"][1]["00091010"]["BulkDataURI"]
        self.assertEqual(uri, "litevna:/studies/1/series/2/instances/3/bulkdata/00400275/1/00091010")
        self.assertEqual(absolute(b'{"a":"litevna:/x"}', "http://h/s/dicomweb"),
                         b'{"a":"http://h/s/dicomweb/x"}')
