"""An in-memory blob store for unit tests of the layers above storage."""

import io
import os
import tempfile

from zope.interface import implementer

from litevna.interfaces import IBlobStore


@implementer(IBlobStore)
class MemoryBlobStore:
    """Keys map to bytes; put_file reads the file in and removes it."""

    def __init__(self):
        self.blobs = {}
        self.syncs = 0

    def put_file(self, path, key):
        with open(path, "rb") as fp:
            self.blobs[key] = fp.read()
        os.unlink(path)

    def sync(self):
        self.syncs += 1

    def open(self, key):
        return io.BytesIO(self.blobs[key])

    def size(self, key):
        return len(self.blobs[key])

    def delete(self, key):
        self.blobs.pop(key, None)

    def exists(self, key):
        return key in self.blobs

    def local_path(self, key):
        fd, path = tempfile.mkstemp(prefix="litevna-blob-")
        with os.fdopen(fd, "wb") as fp:
            fp.write(self.blobs[key])
        return path
