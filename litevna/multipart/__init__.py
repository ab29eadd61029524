"""multipart/related bodies (RFC 2387 over RFC 2046 §5.1): sans-IO parser and writer."""

from litevna.multipart.parser import (  # noqa: F401
    PART_DATA, PART_END, PART_HEADERS, MultipartError, MultipartParser,
)
