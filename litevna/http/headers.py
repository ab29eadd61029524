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
