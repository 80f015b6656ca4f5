"""TensorFlow's tensor-bundle checkpoints (``PREFIX.index`` + ``PREFIX.data-00000-of-00001``),
read and written without TensorFlow.

The ``.index`` file is a LevelDB-format sorted table: data blocks of prefix-compressed
``key -> value`` entries with restart points, an index block pointing at them, and a
48-byte footer that ends in a magic number. Under the empty key is a ``BundleHeaderProto``
(shard count, endianness); under each tensor's name a ``BundleEntryProto`` (dtype, shape,
shard, offset, size, masked CRC-32C of the tensor's bytes). Every block's trailer checksum
and every tensor's checksum is verified: a damaged file is a :class:`CheckpointError`, never
wrong weights. Only what a checkpoint of plain numeric tensors uses is read (no string
tensors, no partitioned slices, no compressed blocks).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = 0xDB4775248B80FB57
FOOTER = 48
# TensorFlow's DataType enum -> numpy (little-endian)
# fmt: off
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
# fmt: on
DTYPE_CODES = {v: k for k, v in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file that is not a readable tensor bundle (damaged, truncated, unsupported)."""


@dataclass(frozen=True)
class Entry:
    """One tensor's record in the ``.index`` table."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored


def crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(data))


def mask(crc: int) -> int:
    """LevelDB's checksum mask (a CRC of data that holds CRCs is otherwise weak)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------ protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError("a varint runs past its field")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, pos


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """``(field number, value)`` of a protobuf message: ints for varint/fixed, bytes else."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = _varint(buf, pos)
            out.append((num, v))
        elif wire == 1:
            out.append((num, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise CheckpointError("a field runs past its message")
            out.append((num, buf[pos : pos + n]))
            pos += n
        elif wire == 5:
            out.append((num, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            raise CheckpointError(f"protobuf wire type {wire} in an index entry")
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for num, dim in _fields(buf):
        if num == 3 and dim:
            raise CheckpointError("a tensor of unknown rank")
        if num == 2:
            dims.append(next((int(v) for n, v in _fields(dim) if n == 1), 0))
    return tuple(dims)


def _entry(name: str, buf: bytes) -> Entry:
    f: dict[int, Any] = {}
    for num, v in _fields(buf):
        if num == 7:
            raise CheckpointError(f"{name}: partitioned (sliced) tensors are not supported")
        f[num] = v
    code = int(f.get(1, 0))
    if code not in DTYPES:
        raise CheckpointError(f"{name}: TensorFlow dtype {code} is not supported")
    shape = _shape(f[2]) if isinstance(f.get(2), bytes) else ()
    vals = [int(f.get(k, 0)) for k in (3, 4, 5, 6)]
    entry = Entry(name, DTYPES[code], shape, *vals)
    if entry.size != int(np.prod(shape, dtype=np.int64)) * entry.dtype.itemsize:
        raise CheckpointError(f"{name}: {entry.size} bytes for shape {shape} of {entry.dtype}")
    return entry


# ------------------------------------------------------------------------------ table


def _block(data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if end + 5 > len(data):
        raise CheckpointError("a block runs past the end of the index (truncated file?)")
    contents, kind = data[offset:end], data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if mask(crc32c(contents + bytes([kind]))) != stored:
        raise CheckpointError(f"index block at {offset}: checksum mismatch (damaged file)")
    if kind != 0:
        raise CheckpointError(f"index block at {offset}: compression type {kind} is not supported")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError("an index block too short for its restart count")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise CheckpointError("an index block's restart array runs past the block")
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + n_value > end:
            raise CheckpointError("an index entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + n_value]))
        pos += n_value
    return out


def read_index(prefix: str | Path) -> dict[str, Entry]:
    """Every tensor's :class:`Entry` in ``PREFIX.index`` (checksums of its blocks verified)."""
    path = Path(f"{prefix}.index")
    data = path.read_bytes()
    if len(data) < FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (no table magic)")
    footer = data[len(data) - FOOTER : len(data) - 8]
    _, pos = _varint(footer, _varint(footer, 0)[1])  # the metaindex handle: unused
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries: dict[str, Entry] = {}
    header = None
    for _, handle in _block_entries(_block(data, index_offset, index_size)):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(_block(data, offset, size)):
            if key == b"":
                header = dict(_fields(value))
            else:
                name = key.decode("utf-8")
                entries[name] = _entry(name, value)
    if header is None:
        raise CheckpointError(f"{path}: no bundle header")
    if header.get(2, 0) != 0:
        raise CheckpointError(f"{path}: a big-endian bundle is not supported")
    shards = int(header.get(1, 1))
    if any(e.shard >= shards for e in entries.values()):
        raise CheckpointError(f"{path}: an entry names a shard past the header's {shards}")
    return entries


def read_checkpoint(prefix: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a bundle (or the ``names`` asked), each checked against its CRC-32C."""
    entries = read_index(prefix)
    missing = sorted(set(names or ()) - set(entries))
    if missing:
        raise CheckpointError(f"{prefix}: no tensor named {', '.join(missing)}")
    shards = 1 + max((e.shard for e in entries.values()), default=0)
    wanted = [entries[n] for n in names] if names is not None else list(entries.values())
    out: dict[str, np.ndarray] = {}
    for shard in sorted({e.shard for e in wanted}):
        data = Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}").read_bytes()
        for e in (e for e in wanted if e.shard == shard):
            raw = data[e.offset : e.offset + e.size]
            if len(raw) != e.size:
                raise CheckpointError(f"{e.name}: the data file ends inside the tensor (truncated)")
            if mask(crc32c(raw)) != e.crc32c:
                raise CheckpointError(f"{e.name}: checksum mismatch (damaged data file)")
            out[e.name] = np.frombuffer(raw, dtype=e.dtype).reshape(e.shape).copy()
    return out


# ------------------------------------------------------------------------------ writer


def _put_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _put_varint(num << 3 | 2) + _put_varint(len(value)) + value
    if fixed32:
        return _put_varint(num << 3 | 5) + struct.pack("<I", value)
    return _put_varint(num << 3) + _put_varint(value)


def _build_block(items: list[tuple[bytes, bytes]], restart_every: int = 16) -> bytes:
    out, restarts, last = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_every:
            while shared < min(len(key), len(last)) and key[shared] == last[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += _put_varint(shared) + _put_varint(len(key) - shared) + _put_varint(len(value))
        out += key[shared:] + value
        last = key
    restarts = restarts or [0]
    return bytes(out) + b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))


def write_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray], block_entries: int = 8) -> None:
    """Write ``tensors`` as a one-shard bundle that TensorFlow reads (tests, fixtures):
    ``block_entries`` per data block, so several blocks and restarts are exercised."""
    data, entries = bytearray(), []
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")  # (ascontiguousarray would make a scalar 1-D)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        raw = arr.astype(dt).tobytes()
        shape = b"".join(_field(2, _field(1, d)) for d in arr.shape)
        proto = _field(1, DTYPE_CODES[np.dtype(dt)]) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))
        entries.append((name.encode(), proto + _field(6, mask(crc32c(raw)), fixed32=True)))
        data += raw
    header = _field(1, 1) + _field(3, _field(1, 1))  # one shard, little-endian, producer 1
    items = [(b"", header)] + entries
    table, index = bytearray(), []
    for i in range(0, len(items), block_entries):
        chunk = items[i : i + block_entries]
        index.append((chunk[-1][0], _append_block(table, _build_block(chunk))))
    meta_handle = _append_block(table, _build_block([]))
    index_handle = _append_block(table, _build_block(index, restart_every=1))
    footer = meta_handle + index_handle
    table += footer + bytes(FOOTER - 8 - len(footer)) + struct.pack("<Q", MAGIC)
    Path(f"{prefix}.index").write_bytes(bytes(table))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


def _append_block(table: bytearray, block: bytes) -> bytes:
    """Append ``block`` and its trailer to ``table``; its handle (offset, size varints)."""
    handle = _put_varint(len(table)) + _put_varint(len(block))
    table += block + b"\x00" + struct.pack("<I", mask(crc32c(block + b"\x00")))
    return handle
