"""QIDO-RS over the relational index: a Query (litevna.dicom.query) becomes SQL.

Keys with an exact column become SQL conditions; the rest are checked in
Python against the stored DICOM JSON of their level (``Key.test`` is the
definition of a match, the SQL is only its fast form). Keys of a lower level
than the query's match when some child does; a key of a parent level
is a condition on the joined parent row. When every key is exact in SQL the
page and the count come straight from SQL; otherwise candidates stream in
order and Python decides, so ``limit``/``offset`` stay exact either way.

The SQL is shared by the dialects; ``Dialect`` holds what differs.
"""

import functools

import orjson

from litevna.dicom import query as q
from litevna.dicom.jsonmodel import first_value

FROM = {
    "study": "studies st",
    "series": "series se JOIN studies st ON st.id = se.study_pk",
    "instance": ("instances i JOIN series se ON se.id = i.series_pk "
                 "JOIN studies st ON st.id = se.study_pk"),
}
ALIAS = {"study": "st", "series": "se", "instance": "i"}
ORDER = {"study": "st.id", "series": "se.id", "instance": "i.id"}
#: Up to this many matches past the page are counted by fetching their ids.
COUNT_BY_FETCH = 2000

_SERIES_COUNT = "(SELECT COUNT(*) FROM series c WHERE c.study_pk = {a}.id)"
_STUDY_INSTANCES = ("(SELECT COUNT(*) FROM series c JOIN instances ci ON ci.series_pk = c.id "
                    "WHERE c.study_pk = {a}.id)")
_SERIES_INSTANCES = "(SELECT COUNT(*) FROM instances ci WHERE ci.series_pk = {a}.id)"
_MODALITIES = "(SELECT {modalities} FROM series c WHERE c.study_pk = {a}.id)"

#: (level, tag) -> (SQL expression over the level's alias {a}, kind of column).
COLUMNS = {
    ("study", q.STUDY_UID): ("{a}.study_uid", "uid"),
    ("study", "00100020"): ("{a}.patient_id", "text"),
    ("study", "00100010"): ("{a}.pn_", "pn"),
    ("study", "00100030"): ("{a}.patient_birth_date", "range"),
    ("study", "00100040"): ("{a}.patient_sex", "text"),
    ("study", "00080020"): ("{a}.study_date", "range"),
    ("study", "00080030"): ("{a}.study_time_key", "range"),
    ("study", "00080050"): ("{a}.accession_number", "text"),
    ("study", "00200010"): ("{a}.study_id", "text"),
    ("study", "00081030"): ("{a}.study_description", "text"),
    ("study", q.MODALITIES_IN_STUDY): ("{a}.id", "modalities"),
    ("study", "00201206"): (_SERIES_COUNT, "int"),
    ("study", "00201208"): (_STUDY_INSTANCES, "int"),
    ("series", q.SERIES_UID): ("{a}.series_uid", "uid"),
    ("series", q.MODALITY): ("{a}.modality", "text"),
    ("series", "00200011"): ("{a}.series_number", "int"),
    ("series", "0008103E"): ("{a}.series_description", "text"),
    ("series", "00080021"): ("{a}.series_date", "range"),
    ("series", "00080031"): ("{a}.series_time_key", "range"),
    ("series", "00201209"): (_SERIES_INSTANCES, "int"),
    ("instance", q.SOP_UID): ("{a}.sop_instance_uid", "uid"),
    ("instance", "00080016"): ("{a}.sop_class_uid", "uid"),
    ("instance", "00200013"): ("{a}.instance_number", "int"),
    ("instance", "00280010"): ("{a}.rows", "int"),
    ("instance", "00280011"): ("{a}.columns", "int"),
    ("instance", "00280100"): ("{a}.bits_allocated", "int"),
}
#: (level, computed tag) -> SQL of its value over alias {a} (PS3.4 C.3.4 Table C.3-1).
COMPUTED_SQL = {
    ("study", q.MODALITIES_IN_STUDY): _MODALITIES,
    ("study", "00201206"): _SERIES_COUNT,
    ("study", "00201208"): _STUDY_INSTANCES,
    ("series", "00201209"): _SERIES_INSTANCES,
}
# (query level, key level) -> (FROM of the children, the parent's id among them,
# their alias, the join to one parent).
_CHILD_FROM = {
    ("study", "series"): ("series se2", "se2.study_pk", "se2"),
    ("study", "instance"): ("series se2 JOIN instances i2 ON i2.series_pk = se2.id",
                            "se2.study_pk", "i2"),
    ("series", "instance"): ("instances i2", "i2.series_pk", "i2"),
}


# The matching columns, computed once at ingest (and by the schema upgrade).

def _text(attrs, tag):
    value = first_value(attrs, tag)
    if value is None:
        return None
    return str(value).strip() or None


def _int(attrs, tag):
    value = first_value(attrs, tag)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def study_columns(attrs):
    """The study row's matching columns from its DICOM JSON attributes."""
    names = q.values_of(attrs.get("00100010"))
    alphabetic, ideographic, phonetic = q.pn_groups(names[0]) if names else (None,) * 3
    return {
        "patient_id": _text(attrs, "00100020"), "patient_name": _text(attrs, "00100010"),
        "patient_birth_date": q.date_key(first_value(attrs, "00100030")),
        "patient_sex": _text(attrs, "00100040"),
        "study_date": q.date_key(first_value(attrs, "00080020")),
        "study_time": _text(attrs, "00080030"),
        "study_time_key": q.time_key(first_value(attrs, "00080030")),
        "accession_number": _text(attrs, "00080050"), "study_id": _text(attrs, "00200010"),
        "study_description": _text(attrs, "00081030"),
        "referring_physician_name": _text(attrs, "00080090"),
        "pn_alphabetic": alphabetic, "pn_ideographic": ideographic, "pn_phonetic": phonetic,
        "pn_words": q.pn_words(names),
    }


def series_columns(attrs):
    """The series row's matching columns from its DICOM JSON attributes."""
    return {
        "modality": _text(attrs, q.MODALITY), "series_number": _int(attrs, "00200011"),
        "series_description": _text(attrs, "0008103E"),
        "series_date": q.date_key(first_value(attrs, "00080021")),
        "series_time": _text(attrs, "00080031"),
        "series_time_key": q.time_key(first_value(attrs, "00080031")),
    }


class Dialect:
    """SQLite: ``?`` parameters, GLOB (case-sensitive, ``*`` and ``?``), group_concat."""

    mark = "?"

    def glob(self, expr, pattern):
        escaped = pattern.replace("[", "[[]")
        return f"{expr} GLOB {self.mark}", [escaped]

    def distinct_list(self, expr):
        """An aggregate: the distinct values of expr joined by commas."""
        return f"group_concat(DISTINCT {expr})"

    def sql(self, template, alias):
        """A COLUMNS or COMPUTED_SQL template over a table alias, in this dialect."""
        return template.format(a=alias, modalities=self.distinct_list("c.modality"))


class PostgresDialect(Dialect):
    """PostgreSQL: GLOB as LIKE compared byte by byte (``COLLATE "C"``), string_agg.

    The marks stay ``?``: the PostgreSQL index hands them to psycopg as ``%s``."""

    def glob(self, expr, pattern):
        like = (pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                .replace("*", "%").replace("?", "_"))
        return f"{expr} COLLATE \"C\" LIKE {self.mark} ESCAPE '\\'", [like]

    def distinct_list(self, expr):
        return f"string_agg(DISTINCT {expr}, ',')"


class Plan:
    """The SQL and the Python checks of one Query."""

    def __init__(self, query, dialect, use_sql=True):
        self.query = query
        self.dialect = dialect
        self.where, self.args = [], []
        self.checks = {}  # level -> keys checked in Python against that level's record
        self.child_keys = {}  # lower level -> (exact in SQL?, keys)
        combined = {id(k) for pair in query.combined for k in pair}
        self.combined = query.combined
        rank = q.LEVELS.index(query.level)
        for key in query.keys:
            if key.universal:
                continue
            key_rank = q.LEVELS.index(key.level)
            if key_rank > rank:
                self.child_keys.setdefault(key.level, []).append(key)
                continue
            sql = None if key.items or not use_sql else self.condition(key, ALIAS[key.level])
            if id(key) in combined:
                # Matched as one instant with its pair; its own range only narrows dates.
                if key.vr == "DA" and sql is not None:
                    self._add(sql)
                continue
            if sql is None:
                self.checks.setdefault(key.level, []).append(key)
            else:
                self._add(sql)
                if not key.matcher.exact:
                    self.checks.setdefault(key.level, []).append(key)
        for date, _ in self.combined:
            self.checks.setdefault(date.level, [])
        self.child_python = {}
        for level, keys in self.child_keys.items():
            children, parent_id, alias = _CHILD_FROM[(query.level, level)]
            parts, exact = [], True
            for key in keys:
                sql = None if key.items or not use_sql else self.condition(key, alias)
                if sql is None or not key.matcher.exact:
                    exact = False
                if sql is not None:
                    parts.append(sql)
            if parts:
                # IN, not a correlated EXISTS: one pass over the children's index.
                conds = " AND ".join(p[0] for p in parts)
                self._add((f"{ALIAS[query.level]}.id IN (SELECT {parent_id} FROM {children} "
                           f"WHERE {conds})", [a for p in parts for a in p[1]]))
            if not exact:
                self.child_python[level] = keys

    @property
    def exact(self):
        return not self.checks and not self.child_python

    def _add(self, sql):
        self.where.append(sql[0])
        self.args.extend(sql[1])

    def condition(self, key, alias):
        """(sql, args) for key over its column, or None if it has no exact column."""
        column = COLUMNS.get((key.level, key.tag))
        if column is None:
            return None
        expr, kind = self.dialect.sql(column[0], alias), column[1]
        matcher, mark = key.matcher, self.dialect.mark
        if kind == "uid" and isinstance(matcher, q.Uids):
            return f"{expr} IN ({', '.join(mark * len(matcher.uids))})", list(matcher.uids)
        if kind == "text" and isinstance(matcher, q.Text):
            return self._any([self._text(expr, p, w) for p, w in matcher.alternatives])
        if kind == "range" and isinstance(matcher, q.Range):
            parts = []
            if matcher.low is not None:
                parts.append((f"{expr} >= {mark}", [matcher.low]))
            if matcher.high is not None:
                parts.append((f"{expr} <= {mark}", [matcher.high]))
            return self._all(parts)
        if kind == "modalities" and isinstance(matcher, q.Text):
            # A study's modalities are its series' (PS3.4 C.3.4 ModalitiesInStudy).
            inner = self._any([self._text("c.modality", p, w) for p, w in matcher.alternatives])
            return f"{expr} IN (SELECT c.study_pk FROM series c WHERE {inner[0]})", inner[1]
        if kind == "int" and isinstance(matcher, q.Numbers):
            whole = sorted({int(n) for n in matcher.numbers if n == int(n)})
            if not whole:
                return "0 = 1", []
            return f"{expr} IN ({', '.join(mark * len(whole))})", whole
        if kind == "pn" and isinstance(matcher, q.PersonName):
            return self._any([self._pn(expr, alt) for alt in matcher.alternatives])
        if kind == "pn" and isinstance(matcher, q.FuzzyName):
            return self._any([self._all([self.dialect.glob(expr + "words", f"* {w}*")
                                         for w in alt]) for alt in matcher.alternatives])
        return None

    def _text(self, expr, pattern, wild):
        if wild:
            return self.dialect.glob(expr, pattern)
        return f"{expr} = {self.dialect.mark}", [pattern]

    def _pn(self, expr, alternative):
        groups = ("alphabetic", "ideographic", "phonetic")
        if len(alternative) == 1:
            pattern, wild = alternative[0]
            return self._any([self._text(expr + g, pattern, wild) for g in groups])
        return self._all([self._text(expr + g, p, w)
                          for g, (p, w) in zip(groups, alternative) if p is not None])

    @staticmethod
    def _any(parts):
        if len(parts) == 1:
            return parts[0]
        return "(" + " OR ".join(p[0] for p in parts) + ")", [a for p in parts for a in p[1]]

    @staticmethod
    def _all(parts):
        if not parts:
            return "1 = 1", []
        return "(" + " AND ".join(p[0] for p in parts) + ")", [a for p in parts for a in p[1]]


def search(execute, dialect, store_id, query, use_sql=True, scope=None):
    """(hits, total) of query in a store. ``execute(sql, args)`` returns rows.

    ``scope`` (a litevna.auth.guard.Scope) keeps only the studies it allows, and what
    is under them: a scoped token's view of the store (SPEC §3).

    A hit is {"study", "series", "instance"}: the DICOM JSON record of each level
    the response needs (computed attributes included) or None, plus the UIDs.
    ``use_sql=False`` decides every key in Python: the tests compare the two."""
    plan = Plan(query, dialect, use_sql)
    level = query.level
    where = " AND ".join(["st.store_id = " + dialect.mark] + plan.where)
    args = [store_id] + plan.args
    if scope is not None:
        sql, scope_args = scope_condition(dialect, scope)
        where, args = f"{where} AND {sql}", args + scope_args
    ident = ORDER[level]
    if plan.exact:
        # One pass gives the page and the count unless the matches are many; then
        # COUNT(*) over the index is cheaper than fetching every id.
        window = query.offset + query.limit + COUNT_BY_FETCH
        rows = [r["pk"] for r in execute(f"SELECT {ident} AS pk FROM {FROM[level]} WHERE "
                                         f"{where} ORDER BY {ident} LIMIT {window}", args)]
        ids = rows[query.offset:query.offset + query.limit]
        total = len(rows)
        if total == window:
            count = f"SELECT COUNT(*) AS n FROM {FROM[level]} WHERE {where}"
            total = next(iter(execute(count, args)))["n"]
    else:
        ids, total = _filtered(execute, plan, where, args)
    return _hits(execute, dialect, query, ids), total


def scope_condition(dialect, scope):
    """SQL (on the studies alias st) true for the studies a Scope allows, and its args."""
    parts, args = [], []
    for column, values in (("st.study_uid", scope.study_ids), ("st.patient_id", scope.patient_ids)):
        if values:
            parts.append(f"{column} IN ({', '.join([dialect.mark] * len(values))})")
            args += sorted(values)
    return "(" + (" OR ".join(parts) or "1 = 0") + ")", args


def _filtered(execute, plan, where, args):
    """Candidate ids in order, kept when the Python checks pass; the page and the total."""
    query, level = plan.query, plan.query.level
    columns = [f"{ORDER[level]} AS pk"]
    for lv, keys in plan.checks.items():
        columns += _record_columns(plan.dialect, lv, ALIAS[lv], keys)
    sql = (f"SELECT {', '.join(columns)} FROM {FROM[level]} WHERE {where} "
           f"ORDER BY {ORDER[level]}")
    page, total = [], 0
    for row in execute(sql, args):
        records = {lv: _record(row, lv) for lv in plan.checks}
        if not all(k.test(records[lv]) for lv, keys in plan.checks.items() for k in keys):
            continue
        if plan.combined and not all(q.combined_test(d, t, records[d.level])
                                     for d, t in plan.combined):
            continue
        if plan.child_python and not _children_match(execute, plan, row["pk"]):
            continue
        if query.offset <= total < query.offset + query.limit:
            page.append(row["pk"])
        total += 1
    return page, total


def _record_columns(dialect, level, alias, keys):
    """SELECT items for the DICOM JSON of a level, with the computed attributes keys name."""
    record = {"study": "attrs", "series": "attrs", "instance": "metadata"}[level]
    columns = [f"{alias}.{record} AS r_{level}"]
    for tag in sorted({k.tag for k in keys if (level, k.tag) in COMPUTED_SQL}):
        columns.append(f"{dialect.sql(COMPUTED_SQL[(level, tag)], alias)} AS c_{level}_{tag}")
    return columns


def _record(row, level):
    record = orjson.loads(row[f"r_{level}"])
    prefix = f"c_{level}_"
    for name in row.keys():
        if name.startswith(prefix):
            tag = name[len(prefix):]
            record[tag] = _computed(tag, row[name])
    return record


# Small on purpose: each parsed document is ~50 objects the cyclic GC scans, and
# 20 000 of them made a full collection stall every request for 150 ms.
@functools.lru_cache(maxsize=2048)
def _parsed(document):
    return orjson.loads(document)


def _document(document):
    """A fresh dict of a stored level document; the parse is cached by content, so
    a study on every page is parsed once, and a changed one is a new entry."""
    return dict(_parsed(bytes(document)))


def _computed(tag, value):
    """The DICOM JSON of a computed attribute from its SQL value."""
    if tag == q.MODALITIES_IN_STUDY:
        modalities = sorted(m for m in (value or "").split(",") if m)
        return {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    return {"vr": "IS", "Value": [value]}


def _children_match(execute, plan, row_id):
    mark = plan.dialect.mark
    for level, keys in plan.child_python.items():
        children, parent_id, alias = _CHILD_FROM[(plan.query.level, level)]
        columns = ", ".join(_record_columns(plan.dialect, level, alias, keys))
        rows = execute(f"SELECT {columns} FROM {children} WHERE {parent_id} = {mark}", [row_id])
        if not any(all(k.test(_record(r, level)) for k in keys) for r in rows):
            return False
    return True


def _hits(execute, dialect, query, ids):
    """The records of the page's rows, in the page's order."""
    if not ids:
        return []
    level = query.level
    rank = q.LEVELS.index(level)
    columns = ["st.study_uid AS study_uid", "st.attrs AS study_attrs",
               dialect.sql(_MODALITIES, "st") + " AS modalities",
               dialect.sql(_SERIES_COUNT, "st") + " AS n_series",
               dialect.sql(_STUDY_INSTANCES, "st") + " AS n_study_instances"]
    if rank >= 1:
        columns += ["se.series_uid AS series_uid", "se.attrs AS series_attrs",
                    dialect.sql(_SERIES_INSTANCES, "se") + " AS n_series_instances"]
    if rank >= 2:
        columns += ["i.sop_instance_uid AS sop_instance_uid", "i.metadata AS metadata",
                    "i.number_of_frames AS number_of_frames"]
    marks = ", ".join(dialect.mark * len(ids))
    rows = execute(f"SELECT {ORDER[level]} AS pk, {', '.join(columns)} FROM {FROM[level]} "
                   f"WHERE {ORDER[level]} IN ({marks})", list(ids))
    by_id = {r["pk"]: r for r in rows}
    hits = []
    for pk in ids:
        row = by_id.get(pk)
        if row is None:
            continue  # deleted between the two reads
        study = _document(row["study_attrs"])
        study[q.MODALITIES_IN_STUDY] = _computed(q.MODALITIES_IN_STUDY, row["modalities"])
        study["00201206"] = _computed("00201206", row["n_series"])
        study["00201208"] = _computed("00201208", row["n_study_instances"])
        hit = {"study": study, "series": None, "instance": None,
               "study_uid": row["study_uid"]}
        if rank >= 1:
            series = _document(row["series_attrs"])
            series["00201209"] = _computed("00201209", row["n_series_instances"])
            hit.update(series=series, series_uid=row["series_uid"])
        if rank >= 2:
            hit.update(instance=orjson.loads(row["metadata"]),
                       sop_instance_uid=row["sop_instance_uid"])
        hits.append(hit)
    return hits
