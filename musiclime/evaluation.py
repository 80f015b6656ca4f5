"""Held-out evaluation of several models, written as Parquet and a Markdown table."""
from __future__ import annotations

from pathlib import Path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r[c]) for c in columns) + " |\n" for r in rows)


def evaluate_models(library: str | Path, task: str, specs: list[str], split: str, out: str | Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from musiclime.models.registry import load_model
    from musiclime.training import load_split, metrics, predict
    rows, data = [], None
    for spec in specs:
        model = load_model(spec)
        if data is None or data.classes != list(model.classes):
            data = load_split(library, task, split, model.sample_rate, classes=list(model.classes))
        m = metrics(data.labels, predict(model, data), len(model.classes))
        modality = getattr(getattr(model, "modality", None), "value", "both")
        rows.append(dict(task=task, modality=modality, model=str(spec), split=split, **m))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "evaluation.parquet")
    md = markdown_table(rows, ["task", "modality", "accuracy", "macro_f1", "n", "model"])
    (out / "evaluation.md").write_text(md)
    return table, md
