"""Helpers to declare documented Arrow fields."""
from __future__ import annotations

import pyarrow as pa


def field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    """An Arrow field whose ``doc`` travels in the field metadata (readable in Parquet)."""
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def schema(fields: list[pa.Field], doc: str) -> pa.Schema:
    return pa.schema(fields, metadata={"doc": doc})


def docs(s: pa.Schema) -> dict[str, str]:
    """``{column: doc}`` of a schema built with :func:`field`."""
    return {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in s}
