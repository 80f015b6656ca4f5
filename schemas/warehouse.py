"""The column types an output table may have: those Spark (3.x, Parquet and Delta) and
Iceberg (format v2) both read without a cast. Every table musiclime writes uses only these;
``tests/test_aggregate.py`` reads each table back with pyarrow, Polars, DuckDB and
``deltalake`` and checks every column against this list.

============  =========================  ===========  ==================  ===============
type          Arrow                      Polars       DuckDB              Delta
============  =========================  ===========  ==================  ===============
boolean       bool                       Boolean      BOOLEAN             boolean
int32         int32                      Int32        INTEGER             integer
int64         int64                      Int64        BIGINT              long
float32       float                      Float32      FLOAT               float
float64       double                     Float64      DOUBLE              double
string        string, large_string       String       VARCHAR             string
binary        binary, large_binary       Binary       BLOB                binary
date          date32                     Date         DATE                date
timestamp     timestamp[us, tz=UTC]      Datetime     TIMESTAMP WITH      timestamp
                                         (us, UTC)    TIME ZONE
list<T>       list, large_list           List(T)      T[]                 array<T>
struct<...>   struct                     Struct       STRUCT(...)         struct<...>
============  =========================  ===========  ==================  ===============

Not allowed: unsigned integers (Spark reads uint64 as decimal(20,0), Iceberg has none),
int8/int16 and float16 (not in Iceberg), nanosecond or zone-less timestamps, dictionary,
map, union and extension types. ``tracks.seed`` is the one 64-bit hash we store: it is
int64 (the same 8 bytes read as signed).
"""
from __future__ import annotations

import pyarrow as pa

TYPES = ("boolean", "int32", "int64", "float32", "float64", "string", "binary", "date", "timestamp", "list",
         "struct")


def arrow_problems(t: pa.DataType, name: str = "") -> list[str]:
    """Why the Arrow type ``t`` (nested types included) is not in the list: empty when it is."""
    if pa.types.is_struct(t):
        return [p for f in t for p in arrow_problems(f.type, f"{name}.{f.name}")]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return arrow_problems(t.value_type, f"{name}[]")
    if pa.types.is_timestamp(t):
        return [] if t.unit == "us" and t.tz in ("UTC", "+00:00") else [f"{name}: {t} (want timestamp[us, tz=UTC])"]
    ok = (pa.bool_(), pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(), pa.large_string(),
          pa.binary(), pa.large_binary(), pa.date32())
    return [] if t in ok else [f"{name}: {t}"]


_POLARS = {"Boolean", "Int32", "Int64", "Float32", "Float64", "String", "Binary", "Date"}
_DUCKDB = {"BOOLEAN", "INTEGER", "BIGINT", "FLOAT", "DOUBLE", "VARCHAR", "BLOB", "DATE", "TIMESTAMP WITH TIME ZONE"}
_DELTA = {"boolean", "integer", "long", "float", "double", "string", "binary", "date", "timestamp"}


def polars_problems(dtype, name: str = "") -> list[str]:
    """The same check on a Polars dtype (as ``LazyFrame.collect_schema()`` gives it)."""
    import polars as pl
    if isinstance(dtype, pl.Struct):
        return [p for f in dtype.fields for p in polars_problems(f.dtype, f"{name}.{f.name}")]
    if isinstance(dtype, pl.List):
        return polars_problems(dtype.inner, f"{name}[]")
    if isinstance(dtype, pl.Datetime):
        return [] if dtype.time_unit == "us" and dtype.time_zone == "UTC" else [f"{name}: {dtype}"]
    return [] if str(dtype) in _POLARS else [f"{name}: {dtype}"]


def duckdb_problems(type_name: str, name: str = "") -> list[str]:
    """The same check on a DuckDB column type (as ``DESCRIBE`` prints it)."""
    t = type_name.strip()
    if t.endswith("[]"):
        return duckdb_problems(t[:-2], f"{name}[]")
    if t.startswith("STRUCT(") and t.endswith(")"):
        out = []
        for part in _split_top(t[len("STRUCT("):-1]):
            field, _, inner = part.strip().partition(" ")
            out += duckdb_problems(inner, f"{name}.{field.strip(chr(34))}")
        return out
    return [] if t in _DUCKDB else [f"{name}: {t}"]


def delta_problems(t, name: str = "") -> list[str]:
    """The same check on a ``deltalake`` schema type (``DeltaTable.schema()`` fields)."""
    kind = getattr(t, "type", None)
    if kind == "struct":
        return [p for f in t.fields for p in delta_problems(f.type, f"{name}.{f.name}")]
    if kind == "array":
        return delta_problems(t.element_type, f"{name}[]")
    return [] if getattr(t, "type", str(t)) in _DELTA else [f"{name}: {t}"]


def _split_top(s: str) -> list[str]:
    """Split ``a INTEGER, b STRUCT(x INTEGER, y DOUBLE)`` at the top-level commas."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p for p in parts if p.strip()]


__all__ = ["TYPES", "arrow_problems", "polars_problems", "duckdb_problems", "delta_problems"]
