"""The QIDO-RS query model (litevna.dicom.query) and its SQL form (litevna.index.search).

The SQL conditions are only a fast form of ``Key.test``: hypothesis checks that
a search answered with SQL equals the same search decided wholly in Python.
"""

import os
import sqlite3

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from helpers import dataset, new_uid, part10
from litevna.dicom import query as q
from litevna.dicom.ingest import parse_part10
from litevna.index.sqlite import SqliteIndex, schema_files


def parse(level="study", **params):
    return q.parse_query(level, list(params.items()))


class ParseTests(SynchronousTestCase):
    def test_bad_requests(self):
        for params in ({"Foo": "1"}, {"0010ZZZZ": "x"}, {"00990010x": "1"},
                       {"StudyDate": "20201345"}, {"StudyDate": "abc"},
                       {"StudyDate": "20210101-20200101"}, {"StudyDate": "-"},
                       {"StudyTime": "2500"}, {"StudyTime": "12:00"},
                       {"StudyInstanceUID": "1.2.abc"}, {"StudyInstanceUID": "1.2.*"},
                       {"InstanceNumber": "x"}, {"limit": "0"}, {"limit": "-1"},
                       {"limit": "abc"}, {"limit": "10001"}, {"offset": "-1"},
                       {"fuzzymatching": "maybe"}, {"includefield": "NotAKeyword"},
                       {"PatientName.FamilyName": "x"}, {"ProcedureCodeSequence": "x"},
                       {"RetrieveURL": "http://x"}, {"AcquisitionDateTime": "2020-2019"},
                       {"AcquisitionDateTime": "20201301"}, {"A.B.C": "1"}):
            self.assertRaises(q.QueryError, parse, **params)

    def test_defaults_and_options(self):
        query = parse()
        self.assertEqual((query.limit, query.offset, query.fuzzy, query.include),
                         (100, 0, False, frozenset()))
        query = parse(limit="10000", offset="5", fuzzymatching="true", includefield="all")
        self.assertEqual((query.limit, query.offset, query.fuzzy, query.include),
                         (10000, 5, True, "all"))

    def test_keys_by_keyword_tag_and_path(self):
        query = q.parse_query("study", [("00100010", "doe*"),
                                        ("ProcedureCodeSequence.CodeValue", "X1"),
                                        ("00081032.00080102", "DCM")])
        tags = [k.tag for k in query.keys]
        self.assertEqual(tags, ["00100010", "00081032"])
        self.assertEqual([t for t, _, _ in query.keys[1].items], ["00080100", "00080102"])

    def test_modality_at_study_level(self):
        for level in q.LEVELS:
            key = parse(level, ModalitiesInStudy="CT,MR").keys[0]
            self.assertEqual((key.tag, key.level), (q.MODALITIES_IN_STUDY, "study"))
            self.assertTrue(key.matcher.test(["MR", "SR"]))
            self.assertFalse(key.matcher.test(["US"]))
        key = parse(Modality="CT").keys[0]
        self.assertEqual((key.tag, key.level), (q.MODALITIES_IN_STUDY, "study"))
        self.assertEqual(parse("series", Modality="CT").keys[0].tag, q.MODALITY)

    def test_includefield_lists(self):
        query = q.parse_query("study", [("includefield", "00081030,00080060"),
                                        ("includefield", "PatientAge")])
        self.assertEqual(query.include, {"00081030", "00080060", "00101010"})


class NormalizerTests(SynchronousTestCase):
    def test_time_key(self):
        self.assertEqual(q.time_key("12"), "120000.000000")
        self.assertEqual(q.time_key("12", upper=True), "125959.999999")
        self.assertEqual(q.time_key("1230", upper=True), "123059.999999")
        self.assertEqual(q.time_key("123045.5"), "123045.500000")
        self.assertEqual(q.time_key("12:30:45"), "123045.000000")
        self.assertIsNone(q.time_key("noon"))

    def test_datetime_key(self):
        self.assertEqual(q.datetime_key("2020"), "20200101000000.000000")
        self.assertEqual(q.datetime_key("202002", upper=True), "20200229235959.999999")
        self.assertEqual(q.datetime_key("20200101120000+0100"), "20200101110000.000000")
        self.assertIsNone(q.datetime_key("20201301"))

    def test_date_key(self):
        self.assertEqual(q.date_key("2020.01.02"), "20200102")
        self.assertIsNone(q.date_key("2020"))

    def test_person_names(self):
        self.assertEqual(q.pn_groups({"Alphabetic": "Doe^John^^^"}), ("DOE^JOHN", None, None))
        self.assertEqual(q.pn_words([{"Alphabetic": "García^José", "Ideographic": "山田"}]),
                         " GARCIA JOSE 山田 ")


class MatcherTests(SynchronousTestCase):
    def key(self, name, value, level="study", fuzzy=False):
        return q.parse_query(level, [(name, value)] + ([("fuzzymatching", "true")]
                                                       if fuzzy else [])).keys[0]

    def test_person_name(self):
        name = [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎",
                 "Phonetic": "やまだ^たろう"}]
        for pattern, expected in (("yamada^tarou", True), ("YAMADA*", True), ("山田*", True),
                                  ("*たろう", True), ("Yamada", False), ("yamada^tarou^", True),
                                  ("=山田^太郎", True), ("Yamada^Tarou=山田*", True),
                                  ("Yamada^Tarou=Doe", False), ("y?mada^*", True)):
            self.assertEqual(self.key("PatientName", pattern).matcher.test(name), expected,
                             pattern)

    def test_fuzzy(self):
        name = [{"Alphabetic": "García^José"}]
        for pattern, expected in (("jose", True), ("gar", True), ("osé", False),
                                  ("JOSÉ GARC", True), ("jose^maria", False)):
            self.assertEqual(self.key("PatientName", pattern, fuzzy=True).matcher.test(name),
                             expected, pattern)

    def test_text_and_wildcards(self):
        key = self.key("StudyDescription", "CT*head?")
        self.assertTrue(key.matcher.test(["CT of the heads"]))
        self.assertFalse(key.matcher.test(["ct of the heads"]))
        self.assertTrue(self.key("ImageType", "LOCALIZER", "instance").matcher.test(
            ["ORIGINAL", "PRIMARY", "LOCALIZER"]))
        self.assertFalse(self.key("StudyDescription", "abc").matcher.test([]))

    def test_ranges(self):
        self.assertTrue(self.key("StudyDate", "20200101-").matcher.test(["20200101"]))
        self.assertFalse(self.key("StudyDate", "-20191231").matcher.test(["20200101"]))
        self.assertTrue(self.key("StudyTime", "-1200").matcher.test(["120059.5"]))
        self.assertFalse(self.key("StudyTime", "1201-").matcher.test(["120059"]))
        self.assertTrue(self.key("StudyTime", "1200").matcher.test(["120030"]))

    def test_sequence_items(self):
        query = q.parse_query("study", [("ProcedureCodeSequence.CodeValue", "X1"),
                                        ("ProcedureCodeSequence.CodingSchemeDesignator", "L")])
        key = query.keys[0]
        item = {"00080100": {"vr": "SH", "Value": ["X1"]},
                "00080102": {"vr": "SH", "Value": ["L"]}}
        other = {"00080100": {"vr": "SH", "Value": ["X1"]},
                 "00080102": {"vr": "SH", "Value": ["DCM"]}}
        self.assertTrue(key.test({"00081032": {"vr": "SQ", "Value": [other, item]}}))
        self.assertFalse(key.test({"00081032": {"vr": "SQ", "Value": [other]}}))

    def test_combined_date_time(self):
        query = q.parse_query("study", [("StudyDate", "20060705-20060707"),
                                        ("StudyTime", "1000-1800"),
                                        ("combineddatetimematching", "true")])
        date, time = query.combined[0]
        record = {"00080020": {"vr": "DA", "Value": ["20060706"]},
                  "00080030": {"vr": "TM", "Value": ["0200"]}}
        self.assertTrue(q.combined_test(date, time, record))
        record["00080020"]["Value"] = ["20060705"]
        self.assertFalse(q.combined_test(date, time, record))


# A small store for the SQL-vs-Python comparison.

_NAMES = ["Doe^John", "Doe^Jane", "García^José", "Müller^Jürgen", "Smith^Anna^^Dr",
          "Yamada^Tarou=山田^太郎=やまだ^たろう", ""]
_MODALITIES = ["CT", "MR", "US", "SR"]


def _corpus(tmp):
    rows = []
    for s in range(12):
        study = new_uid()
        for se in range(1 + s % 3):
            series = new_uid()
            for i in range(1 + (s + se) % 3):
                ds = dataset(study_uid=study, series_uid=series, rows=2, columns=2,
                             PatientName=_NAMES[s % len(_NAMES)], PatientID=f"P{s % 5}",
                             StudyDate=f"2020{1 + s % 12:02d}{1 + s:02d}",
                             StudyTime=f"{8 + s:02d}{s * 5 % 60:02d}00",
                             AccessionNumber=f"A{s:03d}", StudyDescription=f"Study {s % 4}",
                             Modality=_MODALITIES[(s + se) % 4], SeriesNumber=se + 1,
                             SeriesDescription=f"Series {se} of {s}",
                             InstanceNumber=i + 1, ImageType=["ORIGINAL", ["PRIMARY", "SECONDARY"][i % 2]],
                             SpecificCharacterSet="ISO_IR 192")
                path = os.path.join(tmp, f"{s}-{se}-{i}.dcm")
                with open(path, "wb") as fp:
                    fp.write(part10(ds))
                rows.append(parse_part10(path))
    return rows


_KEYS = st.sampled_from([
    ("PatientName", ["doe*", "DOE^JOHN", "*o*", "garcía^josé", "山田*", "", "*", "y?mada*"]),
    ("PatientID", ["P1", "P*", "p1", "P?", "P1\\P2"]),
    ("StudyDate", ["20200101-20200630", "-20200505", "20200707-", "20200303"]),
    ("StudyTime", ["0900-1200", "-10", "1500-", "1305"]),
    ("AccessionNumber", ["A00*", "A005", "*1"]),
    ("StudyDescription", ["Study 1", "Study*", "*2"]),
    ("Modality", ["CT", "MR,US", "C*", "SR\\CT"]),
    ("ModalitiesInStudy", ["CT", "M?", "US,SR"]),
    ("SeriesDescription", ["Series 0*", "*of 3", "Series 1 of 4"]),
    ("SeriesNumber", ["1", "2", "3"]),
    ("InstanceNumber", ["1", "2\\3"]),
    ("ImageType", ["SECONDARY", "PRIM*"]),
    ("NumberOfStudyRelatedSeries", ["1", "2"]),
    ("NumberOfSeriesRelatedInstances", ["1", "3"]),
])


class SqlAgreesWithPythonTests(SynchronousTestCase):
    @classmethod
    def make_index(cls, tmp):
        """The index under test, empty (a subclass runs these tests on another backend)."""
        return SqliteIndex(os.path.join(tmp, "index.sqlite3"))

    @classmethod
    def setUpClass(cls):
        import tempfile

        cls.tmp = tempfile.mkdtemp()
        cls.index = cls.make_index(cls.tmp)
        cls.index.migrate()
        cls.store = cls.index.create_store("demo", cls.index.create_account("a@b.org", "h"))
        with cls.index.write() as writer:
            for parsed in _corpus(cls.tmp):
                writer.add_instance(cls.store, parsed, "k/" + parsed.sop_instance_uid,
                                    orjson.dumps(parsed.metadata), replace=False)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(level=st.sampled_from(q.LEVELS),
           keys=st.lists(st.tuples(_KEYS, st.integers(0, 7)), max_size=3,
                         unique_by=lambda k: k[0][0]),
           fuzzy=st.booleans(), limit=st.integers(1, 12), offset=st.integers(0, 8))
    def test_same_answer(self, level, keys, fuzzy, limit, offset):
        params = [(name, values[i % len(values)]) for (name, values), i in keys]
        params += [("fuzzymatching", str(fuzzy).lower()), ("limit", str(limit)),
                   ("offset", str(offset))]
        try:
            query = q.parse_query(level, params)
        except q.QueryError:
            # Modality and ModalitiesInStudy both at study level name one key twice.
            self.assertEqual(level, "study")
            self.assertEqual({n for n, _ in params} & {"Modality", "ModalitiesInStudy"},
                             {"Modality", "ModalitiesInStudy"})
            return
        fast = self.index.search(self.store, query)
        slow = self.index.search(self.store, query, use_sql=False)
        uid = {"study": "study_uid", "series": "series_uid", "instance": "sop_instance_uid"}[level]
        self.assertEqual(([h[uid] for h in fast[0]], fast[1]),
                         ([h[uid] for h in slow[0]], slow[1]), params)

    def test_counts_and_modalities(self):
        hits, total = self.index.search(self.store, q.parse_query("study", [("limit", "100")]))
        self.assertEqual(total, 12)
        first = hits[0]["study"]
        self.assertEqual(first["00201206"]["Value"], [1])
        self.assertEqual(first[q.MODALITIES_IN_STUDY]["Value"], ["CT"])
        hits, _ = self.index.search(self.store, q.parse_query(
            "study", [("StudyInstanceUID", hits[2]["study_uid"])]))
        self.assertEqual(hits[0]["study"]["00201206"]["Value"], [3])
        self.assertEqual(sorted(hits[0]["study"][q.MODALITIES_IN_STUDY]["Value"]),
                         ["CT", "SR", "US"])


class UpgradeTests(SynchronousTestCase):
    def test_version_one_rows_get_the_new_columns(self):
        path = os.path.join(self.mktemp(), "index.sqlite3")
        os.makedirs(os.path.dirname(path))
        conn = sqlite3.connect(path)
        version, script = schema_files("sqlite")[0]
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("INSERT INTO accounts VALUES (1, 'a@b.org', 'h', 0)")
        conn.execute("INSERT INTO stores VALUES (1, 'demo', 1, 0)")
        attrs = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
                 "00080030": {"vr": "TM", "Value": ["1230"]}}
        conn.execute("INSERT INTO studies (id, store_id, study_uid, attrs) VALUES (1, 1, '1.2', ?)",
                     (orjson.dumps(attrs),))
        conn.commit()
        conn.close()
        index = SqliteIndex(path)
        index.migrate()
        row = index._query("SELECT pn_alphabetic, pn_words, study_time_key FROM studies")[0]
        self.assertEqual(row, {"pn_alphabetic": "DOE^JOHN", "pn_words": " DOE JOHN ",
                               "study_time_key": "123000.000000"})
        self.assertEqual(index._query("PRAGMA user_version")[0]["user_version"],
                         schema_files("sqlite")[-1][0])
        index.close()


class CachedSearchTests(SynchronousTestCase):
    """The Qido service answers from its cache only while the store is unchanged."""

    def test_writes_invalidate(self):
        from twisted.internet.defer import maybeDeferred

        from litevna.dicomweb.qido import Qido

        index = SqliteIndex(":memory:")
        index.migrate()
        store = index.create_store("demo", index.create_account("a@b.org", "h"))
        qido = Qido(index, lambda fn, *args: maybeDeferred(fn, *args))
        tmp = self.mktemp()
        os.makedirs(tmp)

        def add(study_uid):
            path = os.path.join(tmp, study_uid)
            with open(path, "wb") as fp:
                fp.write(part10(dataset(study_uid=study_uid, rows=2, columns=2)))
            parsed = parse_part10(path)
            with index.write() as writer:
                writer.add_instance(store, parsed, "k/" + study_uid,
                                    orjson.dumps(parsed.metadata), replace=False)

        def studies():
            body = self.successResultOf(maybeDeferred(
                qido.search, store, "study", [("PatientID", "LITEVNA-TEST")], "http://x", False))
            return [r[q.STUDY_UID]["Value"][0] for r in orjson.loads(body.pieces)]

        first, second = new_uid(), new_uid()
        add(first)
        self.assertEqual(studies(), [first])
        self.assertEqual(studies(), [first])
        self.assertEqual(qido.cache.hits, 1)
        add(second)
        self.assertEqual(studies(), [first, second])
        with index.write() as writer:
            writer.delete(store, first)
        self.assertEqual(studies(), [second])
