"""Rerun the analyst queries of docs/analysis.md (each ```sql block in "What an analyst runs first")
against ``demo_out/`` with DuckDB and replace the result table under each one.

    make demo && python bench/readme_queries.py
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(```sql\n(?P<sql>(?:(?!```).)*?)```\n\n)(?P<table>(?:\|[^\n]*\|\n)+)", re.S)


def markdown(cursor) -> str:
    cols = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    return "".join(["| " + " | ".join(cols) + " |\n", "|" + "---|" * len(cols) + "\n"] +
                   ["| " + " | ".join(str(v) for v in r) + " |\n" for r in rows])


def main() -> None:
    import duckdb
    page = ROOT / "docs" / "analysis.md"
    text = page.read_text()
    con = duckdb.connect()
    page.write_text(BLOCK.sub(lambda m: m.group(1) + markdown(con.execute(m.group("sql"))), text))
    print("docs/analysis.md: analyst queries rerun against demo_out/")


if __name__ == "__main__":
    main()
