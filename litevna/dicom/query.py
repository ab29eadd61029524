"""The QIDO-RS query model (PS3.18 §8.3.4, PS3.4 C.2.2.2): parameters in, a Query out.

Pure functions only. A Query is a list of Keys; each Key names an attribute, its
level in the study/series/instance model, its VR and a matcher. A matcher tests
DICOM JSON values and is the definition of what matches; the index translates
the matchers it can into SQL over its own columns and leaves the rest to
``Key.test``. The column normalizers at the bottom (``pn_groups``, ``date_key``,
``time_key``) are shared by ingest and matching, so both sides agree.
"""

import calendar
import re
import unicodedata
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from litevna.dicom.levels import SERIES_TAGS, STUDY_TAGS
from litevna.dicom.uids import is_valid_uid

LEVELS = ("study", "series", "instance")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10000

MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
RETRIEVE_URL = "00081190"
INSTANCE_AVAILABILITY = "00080056"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"

#: Attributes the server computes (PS3.4 C.3.4 Table C.3-1), by level.
COMPUTED = {
    MODALITIES_IN_STUDY: "study",
    "00201206": "study",   # NumberOfStudyRelatedSeries
    "00201208": "study",   # NumberOfStudyRelatedInstances
    "00201209": "series",  # NumberOfSeriesRelatedInstances
}
#: Attributes that exist only in responses: they may be asked for, not matched.
RESPONSE_ONLY = frozenset({RETRIEVE_URL, INSTANCE_AVAILABILITY})

#: PS3.18 Tables 10.6.3-3/4/5: what each level returns for every match.
RETURNED = {
    "study": ("00080005", "00080020", "00080030", "00080050", INSTANCE_AVAILABILITY,
              MODALITIES_IN_STUDY, "00080090", "00080201", RETRIEVE_URL, "00100010",
              "00100020", "00100030", "00100040", STUDY_UID, "00200010", "00201206",
              "00201208"),
    "series": ("00080005", MODALITY, "00080201", "0008103E", RETRIEVE_URL, SERIES_UID,
               "00200011", "00201209", "00400244", "00400245", "00400275"),
    "instance": ("00080005", "00080016", SOP_UID, INSTANCE_AVAILABILITY, "00080201",
                 RETRIEVE_URL, "00200013", "00280010", "00280011", "00280100", "00280008"),
}

# PS3.4 C.2.2.2.4: wildcards apply to these VRs only.
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
_RESERVED = frozenset({"limit", "offset", "fuzzymatching", "includefield", "_auth_token",
                       "accept", "combineddatetimematching"})
_TAG = re.compile(r"[0-9A-Fa-f]{8}\Z")
_DA = re.compile(r"\d{8}\Z")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?\Z")
_DT = (r"\d{4}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)?)?"
       r"(?:[+-]\d{4})?")
_DT_ONE = re.compile(rf"({_DT})\Z")
_DT_RANGE = re.compile(rf"({_DT})?-({_DT})?\Z")
_WORDS = re.compile(r"[\^\s,=]+")
#: Pairs matched as one date-time with combineddatetimematching=true (PS3.4 C.2.2.2.5.1).
DATE_TIME_PAIRS = {"00080020": "00080030", "00080021": "00080031", "00080022": "00080032",
                   "00080023": "00080033", "00100030": "00100032"}


class QueryError(ValueError):
    """A query the server cannot answer as asked (400)."""


# Column normalizers, shared by ingest (index columns) and matching.

def fold(text):
    """Case- and accent-insensitive form of text (fuzzy matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def pn_groups(value):
    """(alphabetic, ideographic, phonetic) of a DICOM JSON PN value, each upper-cased
    with trailing component separators dropped; None for an empty group."""
    if isinstance(value, str):
        value = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("=")))
    return tuple(_pn_group(value.get(name)) for name in ("Alphabetic", "Ideographic", "Phonetic"))


def _pn_group(text):
    if not text:
        return None
    text = text.strip().rstrip("^ ").upper()
    return text or None


def pn_words(values):
    """The folded words of PN values, space-delimited with a space on each side."""
    words = []
    for value in values:
        if isinstance(value, dict):
            for group in value.values():
                words.extend(w for w in _WORDS.split(fold(group)) if w)
    return " " + " ".join(words) + " " if words else None


def date_key(text):
    """YYYYMMDD of a DA value (the ACR-NEMA form with dots too), or None."""
    if not isinstance(text, str):
        return None
    text = text.strip().replace(".", "")
    return text if _DA.match(text) else None


def time_key(text, upper=False):
    """A TM value as HHMMSS.ffffff; a partial value is padded to its first instant,
    or with upper=True to its last (PS3.4 C.2.2.2.5: a range covers what it names)."""
    if not isinstance(text, str):
        return None
    match = _TM.match(text.strip().replace(":", ""))
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    pad = "9" if upper else "0"
    return (hh + (mm or ("59" if upper else "00")) + (ss or ("59" if upper else "00")) + "."
            + (frac or "").ljust(6, pad))


def datetime_key(text, upper=False):
    """A DT value as YYYYMMDDHHMMSS.ffffff, in UTC when it has an offset; padded
    like time_key. None if it is not a valid DT."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not _DT_ONE.match(text):
        return None
    offset = None
    if len(text) > 4 and text[-5] in "+-":
        text, offset = text[:-5], text[-5:]
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if minutes > 59 or hours > (14 if offset[0] == "+" else 12):
            return None  # PS3.5 Table 6.2-1: offsets run from -1200 to +1400
    body, _, frac = text.partition(".")
    year, month = body[0:4], body[4:6] or ("12" if upper else "01")
    try:
        last_day = calendar.monthrange(int(year), int(month))[1]
    except (ValueError, calendar.IllegalMonthError):
        return None
    day = body[6:8] or (f"{last_day:02d}" if upper else "01")
    if int(day) < 1 or int(day) > last_day:
        return None
    hour = body[8:10] or ("23" if upper else "00")
    minute = body[10:12] or ("59" if upper else "00")
    second = body[12:14] or ("59" if upper else "00")
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        return None
    key = year + month + day + hour + minute + second + "." + frac.ljust(6, "9" if upper else "0")
    return _shift(key, offset) if offset is not None else key


def _shift(key, offset):
    """key moved from local time at offset (+HHMM) to UTC."""
    import datetime

    try:
        moment = datetime.datetime.strptime(key[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return key
    sign = -1 if offset[0] == "+" else 1
    delta = datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    try:
        moment += sign * delta
    except OverflowError:
        return key
    return moment.strftime("%Y%m%d%H%M%S") + key[14:]


def values_of(element):
    """The Value list of a DICOM JSON element (empty when absent)."""
    if not element:
        return []
    return element.get("Value") or []


# Matchers: each tests a list of DICOM JSON values.

class Universal:
    """Universal matching (PS3.4 C.2.2.2.3): everything matches."""

    exact = True

    def test(self, values):
        return True


@dataclass
class Text:
    """Single value or wildcard matching of any of the alternatives (a backslash
    separates them), case-sensitive (PS3.4 C.2.2.2.1)."""

    alternatives: list  # [(pattern, has_wildcard)]
    exact = True

    def __post_init__(self):
        self._regexes = [_wildcard_regex(p) if wild else None for p, wild in self.alternatives]

    def test(self, values):
        for value in values:
            text = _as_text(value)
            if text is None:
                continue
            text = text.strip()
            for (pattern, _), regex in zip(self.alternatives, self._regexes):
                if (regex.match(text) if regex else text == pattern):
                    return True
        return False


@dataclass
class PersonName:
    """PN matching: case-insensitive, trailing separators ignored; a query with '='
    matches its groups pairwise, one without matches any group (PS3.5 §6.2.1)."""

    alternatives: list  # [[(group pattern or None, has_wildcard) x 3] or [(pattern, wild)]]
    exact = True

    def __post_init__(self):
        self._compiled = [[(p, _wildcard_regex(p) if w else None) if p is not None else None
                           for p, w in alt] for alt in self.alternatives]

    def test(self, values):
        for value in values:
            groups = pn_groups(value) if isinstance(value, (dict, str)) else (None,) * 3
            for alt in self._compiled:
                if len(alt) == 1:
                    if any(_pn_match(g, *alt[0]) for g in groups):
                        return True
                elif all(q is None or _pn_match(g, *q) for g, q in zip(groups, alt)):
                    return True
        return False


@dataclass
class FuzzyName:
    """fuzzymatching=true on PN: every query word is the start of a word of the name,
    case- and accent-insensitively (PS3.18 §8.3.4.1 leaves the rule to the server)."""

    alternatives: list  # [[word, ...]] folded words, wildcards allowed
    exact: bool = True

    def __post_init__(self):
        self.exact = not any(_has_wildcard(w) for alt in self.alternatives for w in alt)
        self._compiled = [[_wildcard_regex(w + "*") for w in alt] for alt in self.alternatives]

    def test(self, values):
        words = (pn_words(values) or "").split()
        return any(all(any(r.match(w) for w in words) for r in alt) for alt in self._compiled)


@dataclass
class Uids:
    """List of UID matching (PS3.4 C.2.2.2.2)."""

    uids: list
    exact = True

    def test(self, values):
        return any(v in self.uids for v in values if isinstance(v, str))


@dataclass
class Range:
    """DA/TM/DT single value or range matching over normalized keys (inclusive)."""

    vr: str
    low: str | None
    high: str | None
    exact = True

    def test(self, values):
        for value in values:
            key = stored_key(self.vr, value)
            if key is None:
                continue
            if (self.low is None or key >= self.low) and (self.high is None or key <= self.high):
                return True
        return False


@dataclass
class Numbers:
    """Single value matching of numbers (any of a backslash list)."""

    numbers: list
    exact = True

    def test(self, values):
        for value in values:
            try:
                if float(value) in self.numbers:
                    return True
            except (TypeError, ValueError):
                continue
        return False


def stored_key(vr, value):
    """The comparable key of a stored DA/TM/DT value."""
    if vr == "DA":
        return date_key(value)
    if vr == "TM":
        return time_key(value)
    return datetime_key(value)


def _as_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("Alphabetic")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _pn_match(group, pattern, regex):
    if group is None:
        return False
    return bool(regex.match(group)) if regex else group == pattern


def _has_wildcard(text):
    return "*" in text or "?" in text


def _wildcard_regex(pattern):
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


# Keys and queries.

@dataclass
class Key:
    """One matching key: a top-level attribute, or a sequence with item keys."""

    tag: str
    vr: str
    level: str
    matcher: object
    items: list = field(default_factory=list)  # [(tag, vr, matcher)] for SQ keys

    @property
    def universal(self):
        return isinstance(self.matcher, Universal) and all(
            isinstance(m, Universal) for _, _, m in self.items)

    def test(self, record):
        """Does the record (a DICOM JSON dict of this key's level) match?"""
        element = record.get(self.tag)
        if not self.items:
            return self.matcher.test(values_of(element))
        if self.universal:
            return True
        for item in values_of(element):
            if isinstance(item, dict) and all(
                    m.test(values_of(item.get(t))) for t, _, m in self.items):
                return True
        return False


@dataclass
class Query:
    """A parsed QIDO-RS request at one level."""

    level: str
    keys: list
    include: frozenset | str  # tags, or "all"
    limit: int
    offset: int
    fuzzy: bool
    all_of_level: bool  # no parent UID in the path: return the parents' attributes too
    combined: list = field(default_factory=list)  # [(date Key, time Key)] matched as one


def level_of(tag):
    """The query model level an attribute lives at."""
    if tag in COMPUTED:
        return COMPUTED[tag]
    if tag in STUDY_TAGS:
        return "study"
    if tag in SERIES_TAGS:
        return "series"
    return "instance"


def parse_query(level, params, study_uid=None, series_uid=None):
    """A Query from decoded parameters [(name, value)] and the path's UIDs.

    Raises QueryError with a message fit for a 400 response."""
    options = {"limit": None, "offset": None, "fuzzymatching": None,
               "combineddatetimematching": None}
    includes, matches, seen = [], [], set()
    for name, value in params:
        lowered = name.lower()
        if lowered in _RESERVED:
            if lowered == "includefield":
                includes.extend(v.strip() for v in value.split(",") if v.strip())
            elif lowered in options:
                if options[lowered] is not None:
                    raise QueryError(f"{name} is given more than once")
                options[lowered] = value
            continue
        if name in seen:
            raise QueryError(f"{name} is given more than once")
        seen.add(name)
        matches.append((name, value))
    limit = _integer("limit", options["limit"], DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer("offset", options["offset"], 0, 0, None)
    fuzzy = _boolean("fuzzymatching", options["fuzzymatching"])
    combine = _boolean("combineddatetimematching", options["combineddatetimematching"])
    keys = []
    if study_uid is not None:
        keys.append(Key(STUDY_UID, "UI", "study", Uids([study_uid])))
    if series_uid is not None:
        keys.append(Key(SERIES_UID, "UI", "series", Uids([series_uid])))
    sequences, given = {}, set()
    for name, value in matches:
        path = _attribute_path(name)
        if len(path) == 2:
            seq_tag, item_tag = path
            if _vr(seq_tag) != "SQ":
                raise QueryError(f"{name}: {_keyword(seq_tag)} is not a sequence")
            key = sequences.get(seq_tag)
            if key is None:
                key = sequences[seq_tag] = Key(seq_tag, "SQ", level_of(seq_tag), Universal())
                keys.append(key)
            item_vr = _vr(item_tag)
            key.items.append((item_tag, item_vr, _matcher(name, item_vr, value, fuzzy)))
            continue
        tag = path[0]
        if level == "study" and tag == MODALITY:
            tag = MODALITIES_IN_STUDY  # OHIF sends Modality for ModalitiesInStudy
        vr = _vr(tag)
        if tag in RESPONSE_ONLY:
            if value.strip() not in ("", "*"):
                raise QueryError(f"{name} can be returned but not matched")
            continue
        if tag in given or tag in sequences:
            raise QueryError(f"{name} is given more than once")
        given.add(tag)
        if vr == "SQ":
            if value.strip() not in ("", "*"):
                raise QueryError(f"{name} is a sequence: match on its items with "
                                 f"{name}.<attribute>=value")
            sequences[tag] = key = Key(tag, "SQ", level_of(tag), Universal())
            keys.append(key)
            continue
        keys.append(Key(tag, vr, level_of(tag), _matcher(
            name, vr, value, fuzzy, lists=tag in (MODALITY, MODALITIES_IN_STUDY))))
    include = _includes(includes)
    query = Query(level, keys, include, limit, offset, fuzzy,
                  all_of_level=(study_uid is None if level != "instance"
                                else study_uid is None or series_uid is None))
    if combine:
        _combine_date_times(query)
    return query


def _combine_date_times(query):
    """PS3.4 C.2.2.2.5.1: a date key and its time key both given match one instant."""
    by_tag = {k.tag: k for k in query.keys if not k.items}
    for date_tag, time_tag in DATE_TIME_PAIRS.items():
        date, time = by_tag.get(date_tag), by_tag.get(time_tag)
        if date is None or time is None or not isinstance(date.matcher, Range) \
                or not isinstance(time.matcher, Range):
            continue
        query.combined.append((date, time))


def combined_test(date_key_, time_key_, record):
    """Does record's date+time fall in the combined range of the two keys?"""
    dates = values_of(record.get(date_key_.tag))
    times = values_of(record.get(time_key_.tag)) or ["000000"]
    low = high = None
    if date_key_.matcher.low is not None:
        low = date_key_.matcher.low + (time_key_.matcher.low or "000000.000000")
    if date_key_.matcher.high is not None:
        high = date_key_.matcher.high + (time_key_.matcher.high or "235959.999999")
    for d in dates:
        for t in times:
            dk, tk = date_key(d), time_key(t) or "000000.000000"
            if dk is None:
                continue
            moment = dk + tk
            if (low is None or moment >= low) and (high is None or moment <= high):
                return True
    return False


def _integer(name, value, default, low, high):
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise QueryError(f"{name} must be a whole number, not {value[:40]!r}") from None
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise QueryError(f"{name} must be {bounds}, not {number}")
    return number


def _boolean(name, value):
    if value is None:
        return False
    if value.strip().lower() in ("true", "1"):
        return True
    if value.strip().lower() in ("false", "0", ""):
        return False
    raise QueryError(f"{name} must be true or false, not {value[:40]!r}")


def _includes(names):
    if any(n.lower() == "all" for n in names):
        return "all"
    tags = set()
    for name in names:
        tags.add(_attribute_path(name)[0])
    return frozenset(tags)


def _attribute_path(name):
    """The tags of a key name: keyword or 8-hex tag, or two of them joined by a dot."""
    parts = name.split(".")
    if len(parts) > 2:
        raise QueryError(f"{name[:80]!r}: sequence matching goes one level deep")
    return [_tag(p, name) for p in parts]


def _tag(part, name):
    if _TAG.match(part):
        tag = part.upper()
        number = int(tag, 16)
        if number >> 16 & 1:  # private (odd group): known only from the data
            return tag
        try:
            dictionary_VR(number)
        except KeyError:
            raise QueryError(f"{name[:80]!r}: {tag} is not an attribute this server "
                             "knows") from None
        return tag
    number = tag_for_keyword(part)
    if number is None:
        raise QueryError(f"{name[:80]!r} is not a DICOM attribute keyword or tag")
    return f"{number:08X}"


def _vr(tag):
    number = int(tag, 16)
    if number >> 16 & 1:
        return "UN"
    vr = dictionary_VR(number)
    if " or " in vr:  # US or SS, OB or OW...: numbers if every choice is one
        choices = vr.split(" or ")
        return "US" if all(c in _NUMBER_VRS for c in choices) else choices[0]
    return vr


def _keyword(tag):
    return keyword_for_tag(int(tag, 16)) or tag


def _matcher(name, vr, value, fuzzy, lists=False):
    """The matcher for one key's value (PS3.4 C.2.2.2)."""
    value = value.strip()
    if value in ("", "*"):
        return Universal()
    if vr == "UI":
        uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
        bad = [u for u in uids if not is_valid_uid(u)]
        if bad or not uids:
            raise QueryError(f"{name}: {(bad or [value])[0][:80]!r} is not a valid UID")
        return Uids(uids)
    if vr in ("DA", "TM", "DT"):
        return _range(name, vr, value)
    if vr in _NUMBER_VRS:
        numbers = []
        for part in value.split("\\"):
            try:
                number = float(part)
            except ValueError:
                raise QueryError(f"{name}: {part[:40]!r} is not a number") from None
            if number != number:
                raise QueryError(f"{name}: {part[:40]!r} is not a number")
            numbers.append(number)
        return Numbers(numbers)
    if vr in ("SQ", "OB", "OD", "OF", "OL", "OV", "OW", "AT"):
        raise QueryError(f"{name}: attributes of VR {vr} cannot be matched on a value")
    separators = r"[,\\]" if lists else r"\\"
    alternatives = [a.strip() for a in re.split(separators, value)]
    alternatives = [a for a in alternatives if a] or [""]
    wild = vr in _WILDCARD_VRS or vr == "UN"
    if vr == "PN":
        if fuzzy:
            return FuzzyName([[w for w in _WORDS.split(fold(a)) if w] for a in alternatives])
        return PersonName([_pn_alternative(a) for a in alternatives])
    if wild and "*" in alternatives:
        return Universal()
    return Text([(a, wild and _has_wildcard(a)) for a in alternatives])


def _pn_alternative(text):
    if "=" not in text:
        group = text.rstrip("^ ").upper()
        return [(group, _has_wildcard(group))]
    groups = (text.split("=") + ["", ""])[:3]
    out = []
    for group in groups:
        group = group.strip().rstrip("^ ").upper()
        out.append((group, _has_wildcard(group)) if group else (None, False))
    return out


def _range(name, vr, value):
    if vr == "DT":
        if datetime_key(value) is not None:
            return Range(vr, datetime_key(value), datetime_key(value, upper=True))
        match = _DT_RANGE.match(value)
        if not match or not any(match.groups()):
            raise QueryError(f"{name}: {value[:40]!r} is not a DT value or range")
        low, high = match.groups()
        matcher = Range(vr, datetime_key(low) if low else None,
                        datetime_key(high, upper=True) if high else None)
        if (low and matcher.low is None) or (high and matcher.high is None):
            raise QueryError(f"{name}: {value[:40]!r} is not a DT value or range")
        return _ordered(name, value, matcher)
    low_text, dash, high_text = value.partition("-")
    if not dash:
        low_text = high_text = value
    if not low_text and not high_text:
        raise QueryError(f"{name}: {value[:40]!r} is not a {vr} range")
    if vr == "DA":
        low = _valid_date(name, low_text) if low_text else None
        high = _valid_date(name, high_text) if high_text else None
    else:
        low = _valid_time(name, low_text, False) if low_text else None
        high = _valid_time(name, high_text, True) if high_text else None
    return _ordered(name, value, Range(vr, low, high))


def _ordered(name, value, matcher):
    if matcher.low is not None and matcher.high is not None and matcher.low > matcher.high:
        raise QueryError(f"{name}: the range {value[:60]!r} ends before it starts")
    return matcher


def _valid_date(name, text):
    import datetime

    key = date_key(text) if "." not in text else None
    try:
        if key is None:
            raise ValueError
        datetime.date(int(key[:4]), int(key[4:6]), int(key[6:8]))
    except ValueError:
        raise QueryError(f"{name}: {text[:40]!r} is not a date (YYYYMMDD)") from None
    return key


def _valid_time(name, text, upper):
    match = _TM.match(text)
    if not match or ":" in text:
        raise QueryError(f"{name}: {text[:40]!r} is not a time (HH[MM[SS[.ffffff]]])")
    hh, mm, ss, _ = match.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        raise QueryError(f"{name}: {text[:40]!r} is not a time of day")
    return time_key(text, upper=upper)


# Responses.

def response_tags(query, level):
    """Which attributes of the record at level a response carries, or "all".

    PS3.18 §10.6.3.3: the level's table, the matching keys and includefield
    attributes of the level and its parents; the parents' tables too when the
    target is all series or all instances; nothing of a lower level."""
    own = level == query.level
    if own and query.include == "all":
        return "all"
    tags = set(RETURNED[level]) if own or query.all_of_level else set()
    tags.update(k.tag for k in query.keys if k.level == level)
    if query.include != "all":
        tags.update(t for t in query.include if level_of(t) == level)
    return tags


def select(record, tags):
    """The elements of record named by tags ("all": every element but bulk data)."""
    if tags == "all":
        return {t: e for t, e in record.items() if "BulkDataURI" not in e}
    return {t: record[t] for t in tags if t in record}
