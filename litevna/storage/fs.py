"""Instance files on a local (or network) file system."""

import ctypes
import ctypes.util
import os

from zope.interface import implementer

from litevna.interfaces import IBlobStore


def _find_syncfs():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    return syncfs


# One syncfs(2) makes a whole group of new files and renames durable at once, where
# an fsync per file and per directory would each force their own journal commit.
_SYNCFS = _find_syncfs()


@implementer(IBlobStore)
class FileBlobStore:
    """Files under ``root``; put_file renames, sync makes the renamed files durable.

    Files given to put_file must be on the same file system (the data dir's
    staging folder): the rename is what makes a file appear.
    """

    def __init__(self, root, use_syncfs=True):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self._syncfs = _SYNCFS if use_syncfs else None
        self._dirty = set()
        self._files = []

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
        self._files.append(target)

    def sync(self):
        dirty, self._dirty = self._dirty, set()
        files, self._files = self._files, []
        if not dirty and not files:
            return
        if self._syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if self._syncfs(fd) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs failed")
            finally:
                os.close(fd)
            return
        for path in files + sorted(dirty, key=len, reverse=True):
            fd = os.open(path, os.O_RDONLY)
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
