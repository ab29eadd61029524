"""A ZIP archive written as it streams (stored entries, data descriptors, ZIP64 as needed).

The standard library's zipfile writes to an unseekable sink with data
descriptors; this feeds it files chunk by chunk and hands each chunk of the
archive on as soon as it exists, so no file or archive is ever held whole.
"""

import io
import zipfile

CHUNK = 256 * 1024


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until drained."""

    def __init__(self):
        self._chunks = []
        self._position = 0

    def writable(self):
        return True

    def write(self, data):
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self):
        return self._position

    def drain(self):
        chunks, self._chunks = self._chunks, []
        return chunks


def zip_pieces(entries):
    """Chunks of a ZIP of [(name in archive, file path)], produced lazily."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True)
    for name, path in entries:
        with open(path, "rb") as source, archive.open(name, "w", force_zip64=True) as target:
            while chunk := source.read(CHUNK):
                target.write(chunk)
                yield from sink.drain()
        yield from sink.drain()
    archive.close()
    yield from sink.drain()
