"""UIDs: syntax (PS3.5 §9.1) and the transfer syntaxes this server stores."""

import re

# PS3.5 §9.1: digits and dots, components without leading zeros, at most 64 characters.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*\Z", re.ASCII)

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

NATIVE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
                    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})

#: Encapsulated transfer syntaxes (PS3.5 Annex A.4) and the marker each frame's
#: first fragment starts with, where the codec has one.
ENCAPSULATED = {
    "1.2.840.10008.1.2.4.50": b"\xff\xd8",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": b"\xff\xd8",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57": b"\xff\xd8",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": b"\xff\xd8",  # JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.80": b"\xff\xd8",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": b"\xff\xd8",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": b"\xff\x4f",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": b"\xff\x4f",  # JPEG 2000
    "1.2.840.10008.1.2.4.92": b"\xff\x4f",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93": b"\xff\x4f",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201": b"\xff\x4f",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": b"\xff\x4f",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": b"\xff\x4f",  # HTJ2K
    "1.2.840.10008.1.2.4.100": None,  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101": None,  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102": None,  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103": None,  # MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104": None,  # MPEG-4 AVC/H.264 for 2D Video
    "1.2.840.10008.1.2.4.105": None,  # MPEG-4 AVC/H.264 for 3D Video
    "1.2.840.10008.1.2.4.106": None,  # MPEG-4 AVC/H.264 Stereo
    "1.2.840.10008.1.2.4.107": None,  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.108": None,  # HEVC/H.265 Main 10 Profile
    RLE_LOSSLESS: None,  # RLE Lossless: exactly one fragment per frame (PS3.5 Annex G)
}

KNOWN_TRANSFER_SYNTAXES = NATIVE | frozenset(ENCAPSULATED)


def is_valid_uid(value):
    """True if value is a syntactically valid UID (PS3.5 §9.1)."""
    return isinstance(value, str) and len(value) <= 64 and _UID.match(value) is not None
