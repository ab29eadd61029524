"""Instance files on a local (or network) file system."""

import os

from zope.interface import implementer

from litevna.interfaces import IBlobStore


@implementer(IBlobStore)
class FileBlobStore:
    """Files under ``root``; put_file renames, sync fsyncs the touched directories."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self._dirty = set()

    def _path(self, key):
        path = os.path.normpath(os.path.join(self.root, key))
        if not path.startswith(self.root + os.sep):
            raise KeyError(key)
        return path

    def put_file(self, path, key):
        target = self._path(key)
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            self._dirty.add(os.path.dirname(directory))
        os.replace(path, target)
        self._dirty.add(directory)

    def sync(self):
        dirty, self._dirty = self._dirty, set()
        for directory in sorted(dirty, key=len, reverse=True):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def open(self, key):
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def size(self, key):
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key):
        return os.path.exists(self._path(key))

    def local_path(self, key):
        """The file's path, for zero-copy senders."""
        return self._path(key)
