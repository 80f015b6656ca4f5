"""Reading a standing output's tables as one frame each, whatever release wrote each file.

Outputs are read for years while the tables grow columns (the efficiency work adds
``weight_se`` to ``explanations``): files written before a column existed read it as null,
and columns this release does not know (written by a newer one) are left out, instead of
Polars' default of refusing files whose columns differ. DuckDB users get the same with
``read_parquet(..., union_by_name=true)``.
"""
from __future__ import annotations

from pathlib import Path


def scan(out: str | Path, table: str):
    """``polars.LazyFrame`` of ``out/<table>/run_id=*/**.parquet`` in this release's schema
    (``schemas.tables.ALL`` or ``global_importance``) plus the ``run_id`` partition column."""
    import polars as pl

    from schemas.aggregates import GLOBAL_IMPORTANCE
    from schemas.tables import ALL
    arrow = {**ALL, "global_importance": GLOBAL_IMPORTANCE}[table]
    schema = pl.from_arrow(arrow.empty_table()).schema
    return pl.scan_parquet(str(Path(out) / table / "**" / "*.parquet"), hive_partitioning=True,
                           hive_schema={"run_id": pl.String}, schema=schema, missing_columns="insert",
                           extra_columns="ignore")
