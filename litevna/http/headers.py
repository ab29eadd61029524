"""Parsing of media types and their parameters (RFC 9110 §8.3.1)."""

import re

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Unquoted values may hold "/" (type=application/dicom): real clients send that.
_PARAM = re.compile(
    rf"\s*;\s*({_TOKEN})\s*=\s*(?:([^;\"\s]+)|\"((?:[^\"\\]|\\.)*)\")\s*", re.ASCII)
_TYPE = re.compile(rf"\s*({_TOKEN}/{_TOKEN})\s*", re.ASCII)


class MediaTypeError(ValueError):
    """A header value that is not a media type."""


def parse_media_type(value):
    """Split ``type/subtype; name=value; name="quoted"`` into (type, params).

    The type and parameter names are lower-cased; parameter values keep their
    case with quotes and backslash escapes removed.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    match = _TYPE.match(value)
    if not match:
        raise MediaTypeError(f"not a media type: {value[:100]!r}")
    params = {}
    pos = match.end()
    while pos < len(value):
        param = _PARAM.match(value, pos)
        if not param:
            if value[pos:].strip(" ;\t") == "":
                break
            raise MediaTypeError(f"malformed media type parameters: {value[pos:pos + 100]!r}")
        name, token, quoted = param.groups()
        params[name.lower()] = token if token is not None else re.sub(r"\\(.)", r"\1", quoted)
        pos = param.end()
    return match.group(1).lower(), params


class MediaRange:
    """One entry of an Accept header: a type (maybe with wildcards), its parameters and q."""

    __slots__ = ("type", "params", "q")

    def __init__(self, type_, params, q):
        self.type, self.params, self.q = type_, params, q

    def matches(self, media_type):
        """True if this range covers media_type (``*/*`` and ``x/*`` wildcards)."""
        if self.type in ("*/*", media_type):
            return True
        major, _, minor = self.type.partition("/")
        return minor == "*" and media_type.partition("/")[0] == major

    def __repr__(self):
        return f"MediaRange({self.type!r}, {self.params!r}, {self.q})"


def _split_outside_quotes(value, separator=","):
    parts, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_accept(value):
    """The media ranges of an Accept header, best first (RFC 9110 §12.5.1).

    An empty or missing header means ``*/*``. Raises MediaTypeError for a
    malformed entry or q-value.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not value or not value.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges = []
    for entry in _split_outside_quotes(value):
        if not entry.strip():
            continue
        media_type, params = parse_media_type(entry)
        q = params.pop("q", "1")
        try:
            quality = float(q)
        except ValueError:
            raise MediaTypeError(f"bad q-value {q!r}") from None
        if not 0 <= quality <= 1:
            raise MediaTypeError(f"q-value {q!r} is out of range")
        if quality > 0:
            ranges.append(MediaRange(media_type, params, quality))
    # An empty list (every range had q=0) is well-formed: nothing is acceptable, a 406.
    return sorted(ranges, key=lambda r: -r.q)
