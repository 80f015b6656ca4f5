"""Sizes and modification times of many object-store files from listings instead of one
HEAD request each: an incremental night's content keys stat every file of the catalogue,
and a LIST call answers for up to 1,000 objects of a folder.

A folder is listed once per run, when a batch of the catalogue wants at least
:data:`LIST_MIN` of its files, and held as sorted arrays (an 8-byte digest of each object's
path, its size, its modification time: 24 bytes an object), least recently used first out
past ``max_objects``. Files of folders listed for fewer wanted files, and files a listing
does not show, are asked by HEAD as before, so every key stays what HEAD gives: on S3 a
listing's LastModified is cut to the whole second, as the Last-Modified header has it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

LIST_MIN = 8  # wanted files of one folder in a batch: fewer are cheaper by HEAD
PAGE = 1000  # objects a LIST request returns
SECOND = 10**9


def _digest(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Listings:
    """One run's listings (see the module). ``lists`` and ``heads`` count the requests made."""

    def __init__(self, max_objects: int = 1_000_000):
        self.max_objects = max_objects
        self._folders: OrderedDict = OrderedDict()  # (id(fs), folder) -> (digests, sizes, mtimes)
        self.held = 0
        self.lists = self.heads = 0

    def _folder(self, fs, folder: str):
        import pyarrow.fs as pafs
        key = (id(fs), folder)
        if key in self._folders:
            self._folders.move_to_end(key)
            return self._folders[key]
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
        self.lists += max(1, -(-len(infos) // PAGE))
        files = [f for f in infos if f.type == pafs.FileType.File]
        digests = np.fromiter((_digest(f.path) for f in files), np.uint64, len(files))
        order = np.argsort(digests)
        cut = type(fs).__name__ == "S3FileSystem"  # HTTP's Last-Modified has whole seconds
        mtimes = np.fromiter((int(f.mtime_ns or 0) for f in files), np.int64, len(files))
        entry = (digests[order], np.fromiter((int(f.size or 0) for f in files), np.int64, len(files))[order],
                 (mtimes // SECOND * SECOND if cut else mtimes)[order])
        self._folders[key] = entry
        self.held += len(files)
        while self.held > self.max_objects and len(self._folders) > 1:
            _, old = self._folders.popitem(last=False)
            self.held -= len(old[0])
        return entry

    def stats(self, fs, items: list[tuple[str, str]]) -> dict[str, tuple[int, int] | None]:
        """``(size, mtime_ns)`` or None per location of ``items`` (location, path in ``fs``)."""
        import pyarrow.fs as pafs
        by_folder: dict[str, list[tuple[str, str]]] = {}
        for loc, path in items:
            by_folder.setdefault(path.rsplit("/", 1)[0], []).append((loc, path))
        out: dict[str, tuple[int, int] | None] = {}
        heads: list[tuple[str, str]] = []
        for folder, wanted in by_folder.items():
            if len(wanted) < LIST_MIN and (id(fs), folder) not in self._folders:
                heads += wanted
                continue
            digests, sizes, mtimes = self._folder(fs, folder)
            for loc, path in wanted:
                i = int(np.searchsorted(digests, np.uint64(_digest(path))))
                if i < len(digests) and digests[i] == _digest(path):
                    out[loc] = (int(sizes[i]), int(mtimes[i]))
                else:  # not in the listing (written since, or a digest clash): ask it alone
                    heads.append((loc, path))
        if heads:
            self.heads += len(heads)
            found = fs.get_file_info([p for _, p in heads])
            for (loc, _), f in zip(heads, found):
                out[loc] = (int(f.size or 0), int(f.mtime_ns or 0)) if f.type == pafs.FileType.File else None
        return out
