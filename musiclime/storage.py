"""Where files live: local paths, ``file://`` and any URI ``pyarrow.fs`` understands
(``s3://`` is tested against a real S3 API server, ``az://`` and ``abfs[s]://`` against
Azurite (:mod:`musiclime.azure_blob`); ``gs://`` and ``hdfs://`` go through the same layer).

Credentials and endpoints come from the filesystem's own chain (for S3: ``AWS_*``
environment variables such as ``AWS_ENDPOINT_URL``, ``~/.aws``, instance roles; for Azure:
see :mod:`musiclime.azure_blob`; for GCS: ``GOOGLE_APPLICATION_CREDENTIALS``); they are
never passed around, printed or logged here. A location is kept as the user wrote it (a
``str``): plain paths stay plain paths, so messages name what the user gave.
"""
from __future__ import annotations

import io
import os
from functools import lru_cache

from musiclime import azure_blob


def is_uri(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain path."""
    s = os.fspath(location)
    head, sep, _ = s.partition("://")
    return bool(sep) and head.isidentifier()


@lru_cache(maxsize=64)
def _from_uri(root: str):
    import pyarrow.fs as pafs
    return pafs.FileSystem.from_uri(root)[0]


@lru_cache(maxsize=4)
def _gcs_emulator(host: str):
    """GCS at an emulator (``STORAGE_EMULATOR_HOST``, Google's own name for it), anonymously."""
    import pyarrow.fs as pafs
    scheme, _, netloc = host.rpartition("://")
    return pafs.GcsFileSystem(anonymous=True, endpoint_override=netloc, scheme=scheme or "http")


def filesystem(location: str | os.PathLike):
    """``(pyarrow.fs.FileSystem, path inside it)`` for a location. Filesystems are made once
    per bucket (or host) and reused."""
    import pyarrow.fs as pafs
    s = os.fspath(location)
    if not is_uri(s):
        return pafs.LocalFileSystem(), os.path.abspath(s)
    scheme, _, rest = s.partition("://")
    if scheme == "file":
        return pafs.LocalFileSystem(), "/" + rest.lstrip("/")
    if scheme in azure_blob.SCHEMES:
        return azure_blob.filesystem(azure_blob.account(s)), azure_blob.split(s)[1]
    if scheme in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        return _gcs_emulator(os.environ["STORAGE_EMULATOR_HOST"]), rest.split("?", 1)[0]
    bucket = rest.split("/", 1)[0]
    return _from_uri(f"{scheme}://{bucket}"), rest.split("?", 1)[0]


def native(location: str | os.PathLike) -> str:
    """An absolute path for a local location, the URI for any other: what deltalake opens."""
    s = os.fspath(location)
    return s if is_uri(s) else filesystem(s)[1]


def delta_dataset(table, location: str | os.PathLike, **kwargs):
    """The ``pyarrow.dataset`` of a ``deltalake.DeltaTable`` opened at ``location``, its
    files read through this module's native filesystems. ``kwargs`` go to
    ``DeltaTable.to_pyarrow_dataset`` (``file_pruning_predicate``...)."""
    import pyarrow.fs as pafs
    # deltalake's default filesystem hands pyarrow Python file objects; pyarrow's I/O
    # threads may still hold one when the interpreter exits, and releasing it then crashes
    # a process that did all its work (SIGABRT "terminate called without an active
    # exception", SIGSEGV, or a hang after a scan left part-way). Native files need no
    # interpreter.
    fs, path = filesystem(location)
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(path, fs), **kwargs)


def _location(template: str, path: str) -> str:
    """The location of ``path`` (a path inside ``template``'s filesystem), written like ``template``."""
    if not is_uri(template):
        return path
    if azure_blob.is_azure(template):
        return azure_blob.location_of(template, path)
    return f"{template.partition('://')[0]}://{path}"


def info(location: str | os.PathLike):
    """``pyarrow.fs.FileInfo`` (``type``, ``size``, ``mtime``) of a location."""
    fs, path = filesystem(location)
    return fs.get_file_info(path)


def stats(locations: list[str], listings=None) -> dict[str, tuple[int, int] | None]:
    """``(size, mtime in ns)`` of many files, asked per filesystem in one call (object
    stores: their Last-Modified); None for a file that is missing or cannot be reached.
    With ``listings`` (:class:`musiclime.listing.Listings`), object stores answer from
    listings of the files' folders where a folder holds many of them."""
    import pyarrow.fs as pafs
    groups: dict = {}
    for loc in locations:
        try:
            fs, path = filesystem(loc)
        except Exception:  # a bad URI: the row's decode reports it
            continue
        groups.setdefault(id(fs), (fs, []))[1].append((loc, path))
    out: dict[str, tuple[int, int] | None] = {loc: None for loc in locations}
    for fs, items in groups.values():
        if listings is not None and not isinstance(fs, pafs.LocalFileSystem):
            try:
                out.update(listings.stats(fs, items))
            except Exception:  # unreachable: the rows' decode reports each file
                pass
            continue
        try:
            found = fs.get_file_info([p for _, p in items])
        except Exception:
            continue
        for (loc, _), f in zip(items, found):
            if f.type == pafs.FileType.File:
                out[loc] = (int(f.size or 0), int(f.mtime_ns or 0))
    return out


def version_key(location: str) -> str | None:
    """32 hex digits of a file's size and modification time (Last-Modified on object
    stores): which version of the file was read. None when it is missing or unreachable."""
    import hashlib
    st = stats([location]).get(location)
    if st is None:
        return None
    return hashlib.blake2b(f"{st[0]}:{st[1]}".encode(), digest_size=16).hexdigest()


def is_file(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs
    return info(location).type == pafs.FileType.File


def is_dir(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs
    return info(location).type == pafs.FileType.Directory


def open_input(location: str | os.PathLike):
    """A seekable binary file (``pyarrow.NativeFile``) to read a location."""
    fs, path = filesystem(location)
    return fs.open_input_file(path)


READ_MIN, READ_MAX = 64 << 10, 1 << 20  # range request sizes: small after a seek, doubling while sequential


class RangeReader(io.RawIOBase):
    """A remote file read by ranges (``read_at``), never fetched whole. A read after a seek
    asks for :data:`READ_MIN` bytes; each read that continues where the last request ended
    asks for twice as much, up to :data:`READ_MAX`: a decoder's probes stay small and its
    window streams in few requests. ``requests`` and ``bytes_read`` count what was asked."""

    def __init__(self, native):
        self.native, self.pos, self.size = native, 0, native.size()
        self.requests = self.bytes_read = 0
        self._buf, self._buf_at, self._next = b"", 0, READ_MIN

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, {0: 0, 1: self.pos, 2: self.size}[whence] + offset)
        return self.pos

    def readinto(self, buf) -> int:
        want = min(len(buf), max(0, self.size - self.pos))
        if want == 0:
            return 0
        lo = self.pos - self._buf_at
        if not (0 <= lo < len(self._buf)):
            sequential = self.pos == self._buf_at + len(self._buf) and self._buf
            self._next = min(self._next * 2, READ_MAX) if sequential else READ_MIN
            n = min(max(want, self._next), self.size - self.pos)
            self._buf, self._buf_at = self.native.read_at(n, self.pos), self.pos
            self.requests += 1
            self.bytes_read += len(self._buf)
            lo = 0
        got = self._buf[lo:lo + want]
        buf[: len(got)] = got
        self.pos += len(got)
        return len(got)

    def close(self) -> None:
        if not self.closed:
            self.native.close()
        super().close()


def readable(location: str | os.PathLike):
    """What a decoder opens: a local path as it is (decoded in place, seeking in the file),
    a remote object as a :class:`RangeReader` (only about the bytes decoded are read)."""
    if not is_object_store(location):
        return filesystem(location)[1]
    return RangeReader(open_input(location))


def read_bytes(location: str | os.PathLike) -> bytes:
    with open_input(location) as f:
        return f.read()


def write_bytes(location: str, data: bytes) -> None:
    """One object PUT (atomic on object stores: readers see the old object or the whole new one)."""
    fs, path = filesystem(location)
    if not is_object_store(location):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_atomic(location: str, data: bytes) -> None:
    """Replace a small file whole: readers see the old content or the new, never a torn one.
    Local paths: a temporary file, fsync, ``os.replace``, fsync of the folder; object
    stores: one PUT."""
    if is_object_store(location):
        write_bytes(location, data)
        return
    import uuid
    path = filesystem(location)[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_dir(location: str) -> None:
    """Remove a folder and everything under it; a folder that is already gone is fine."""
    fs, path = filesystem(location)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def makedirs(location: str) -> None:
    """Create a folder (a no-op on object stores, which have none)."""
    if not is_object_store(location):
        os.makedirs(filesystem(location)[1], exist_ok=True)


def delete(location: str) -> None:
    """Remove a file; a file that is already gone is fine."""
    import pyarrow.fs as pafs
    fs, path = filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise


def is_object_store(location: str | os.PathLike) -> bool:
    """A URI of a store that has no rename (anything but a local path or ``file://``)."""
    s = os.fspath(location)
    return is_uri(s) and not s.startswith("file://")


def join(base: str, relative: str) -> str:
    """``relative`` resolved against the folder ``base``: an absolute path or a URI stays as it is."""
    if is_uri(relative) or os.path.isabs(relative):
        return relative
    if not is_uri(base):
        return os.path.join(base, relative)
    return base.rstrip("/") + "/" + relative


def parent(location: str) -> str:
    """The folder a location is in."""
    if not is_uri(location):
        return os.path.dirname(os.path.abspath(location))
    return location.rstrip("/").rsplit("/", 1)[0]


def walk(location: str) -> list[tuple[str, int]]:
    """``(location, size)`` of every file under the folder ``location`` (recursive), sorted;
    none when it does not exist (as on S3, where a folder is only a prefix)."""
    import pyarrow.fs as pafs
    fs, path = filesystem(location)
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted((_location(location, f.path), f.size) for f in found if f.type == pafs.FileType.File)


def children(location: str) -> list[str]:
    """The entries directly in the folder ``location`` (files and folders), sorted, as
    locations; none when it does not exist."""
    import pyarrow.fs as pafs
    fs, path = filesystem(location)
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(_location(location, f.path) for f in found)


def list_files(location: str) -> list[str]:
    """Every file under the folder ``location`` (recursive), sorted, as locations."""
    return [f for f, _ in walk(location)]
