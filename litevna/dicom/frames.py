"""Where each frame's bytes lie in a stored Part 10 file (recorded once, at ingest).

A frame is a tuple of ``(offset, length)`` byte ranges of the file: one range
for native pixel data (PS3.5 §8.1.1), one per fragment for encapsulated pixel
data (PS3.5 §A.4). WADO then serves a frame with range reads alone.
"""

import struct

from litevna.dicom.uids import ENCAPSULATED

_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}


class FrameTableError(ValueError):
    """The pixel data cannot be read as the data set declares it."""


class PixelElement:
    """The header of the top-level pixel data element at a known file position."""

    def __init__(self, tag, vr, value_offset, length):
        self.tag, self.vr, self.value_offset, self.length = tag, vr, value_offset, length

    @property
    def encapsulated(self):
        return self.length == 0xFFFFFFFF


def read_pixel_element(fp, position, implicit_vr, little_endian):
    """Read the element header at position; None if no pixel data element is there."""
    fp.seek(position)
    head = fp.read(12)
    if len(head) < 8:
        return None
    order = "<" if little_endian else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in _PIXEL_TAGS:
        return None
    vr = head[4:6]
    # Writers that declare explicit VR but write implicit exist: trust the bytes.
    if implicit_vr or not (vr.isalpha() and vr.isupper()):
        (length,) = struct.unpack(order + "I", head[4:8])
        return PixelElement(tag, _PIXEL_TAGS[tag], position + 8, length)
    if len(head) < 12:
        raise FrameTableError("the pixel data element header is truncated")
    vr = vr.decode("ascii")
    (length,) = struct.unpack(order + "I", head[8:12])
    return PixelElement(tag, vr, position + 12, length)


def native_frames(element, file_size, number_of_frames, rows, columns, samples, bits_allocated,
                  photometric=""):
    """Frame ranges of native (uncompressed) pixel data."""
    end = element.value_offset + element.length
    if end > file_size:
        raise FrameTableError(f"pixel data runs {end - file_size} bytes past the end of the file")
    if photometric == "YBR_FULL_422":
        samples = 2  # two chrominance samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    frame_bits = rows * columns * samples * bits_allocated
    if frame_bits % 8:
        return None  # 1-bit frames that do not end on a byte: served by decoding
    frame_length = frame_bits // 8
    if frame_length * number_of_frames > element.length:
        raise FrameTableError(
            f"pixel data holds {element.length} bytes, {number_of_frames} frame(s) of "
            f"{rows}x{columns}x{samples} at {bits_allocated} bits need {frame_length * number_of_frames}")
    start = element.value_offset
    return tuple(((start + i * frame_length, frame_length),) for i in range(number_of_frames))


def encapsulated_frames(fp, element, file_size, number_of_frames, transfer_syntax,
                        extended_offsets=None):
    """Frame ranges of encapsulated pixel data, from its offset tables or fragments."""
    items = _items(fp, element.value_offset, file_size)
    if not items:
        raise FrameTableError("encapsulated pixel data has no Basic Offset Table item")
    (bot_offset, bot_length), fragments = items[0], items[1:]
    if not fragments:
        raise FrameTableError("encapsulated pixel data has no fragments")
    # Offsets in both tables count from the first fragment's item tag (PS3.5 §A.4).
    first_item = fragments[0][0] - 8
    starts = None
    if bot_length:
        fp.seek(bot_offset)
        raw = fp.read(bot_length)
        starts = list(struct.unpack(f"<{bot_length // 4}I", raw[: bot_length // 4 * 4]))
    elif extended_offsets:
        starts = list(struct.unpack(f"<{len(extended_offsets) // 8}Q", extended_offsets))
    if starts is not None and len(starts) == number_of_frames:
        by_start = {offset - 8 - first_item: i for i, (offset, _) in enumerate(fragments)}
        if all(s in by_start for s in starts):
            indexes = [by_start[s] for s in starts] + [len(fragments)]
            return tuple(tuple(fragments[indexes[k]:indexes[k + 1]])
                         for k in range(number_of_frames))
    if number_of_frames == 1:
        return (tuple(fragments),)
    if len(fragments) == number_of_frames:
        return tuple((fragment,) for fragment in fragments)
    marker = ENCAPSULATED.get(transfer_syntax)
    if marker:
        firsts = []
        for i, (offset, length) in enumerate(fragments):
            fp.seek(offset)
            if length >= 2 and fp.read(2) == marker:
                firsts.append(i)
        if len(firsts) == number_of_frames and firsts[0] == 0:
            bounds = firsts + [len(fragments)]
            return tuple(tuple(fragments[bounds[k]:bounds[k + 1]])
                         for k in range(number_of_frames))
    return None  # frame boundaries unknowable from the bytes: served by decoding


def _items(fp, offset, file_size):
    """(value offset, length) of each item up to the sequence delimiter."""
    items = []
    fp.seek(offset)
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise FrameTableError("encapsulated pixel data ends without a sequence delimiter")
        group, element, length = struct.unpack("<HHI", head)
        tag = (group << 16) | element
        if tag == _SEQUENCE_DELIMITER:
            return items
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise FrameTableError(f"unexpected element ({group:04X},{element:04X}) in pixel data")
        value_offset = fp.tell()
        if value_offset + length > file_size:
            raise FrameTableError("a pixel data fragment runs past the end of the file")
        items.append((value_offset, length))
        fp.seek(length, 1)


def pack(frames):
    """Serialize a frame table to bytes for the index."""
    if frames is None:
        return None
    flat = [len(frames)]
    for fragments in frames:
        flat.append(len(fragments))
        for offset, length in fragments:
            flat.extend((offset, length))
    return struct.pack(f"<{len(flat)}Q", *flat)


def unpack(blob):
    """Inverse of :func:`pack`."""
    if blob is None:
        return None
    flat = struct.unpack(f"<{len(blob) // 8}Q", blob)
    frames, i = [], 1
    for _ in range(flat[0]):
        count = flat[i]
        frames.append(tuple((flat[i + 1 + 2 * k], flat[i + 2 + 2 * k]) for k in range(count)))
        i += 1 + 2 * count
    return tuple(frames)


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})


def element_end(fp, element, file_size):
    """The file offset just past the pixel data element."""
    if not element.encapsulated:
        return element.value_offset + element.length
    _items(fp, element.value_offset, file_size)
    return fp.tell()  # just past the sequence delimiter


def check_trailer(fp, offset, file_size, implicit_vr, little_endian):
    """Every top-level element after the pixel data must end inside the file (PS3.5 §7.1)."""
    order = "<" if little_endian else ">"
    while offset < file_size:
        fp.seek(offset)
        head = fp.read(12)
        if len(head) < 8:
            raise FrameTableError("the file ends inside an element header")
        vr = head[4:6]
        if implicit_vr:
            (length,), offset = struct.unpack(order + "I", head[4:8]), offset + 8
        elif vr in _LONG_VRS:
            if len(head) < 12:
                raise FrameTableError("the file ends inside an element header")
            (length,), offset = struct.unpack(order + "I", head[8:12]), offset + 12
        else:
            (length,), offset = struct.unpack(order + "H", head[6:8]), offset + 8
        if length == 0xFFFFFFFF:
            return  # an undefined-length sequence after the pixels: left to pydicom's rules
        offset += length
    if offset > file_size:
        raise FrameTableError(f"the file is truncated {offset - file_size} bytes inside its "
                              "last element")
