"""The payloads and the hostile model every page is tested with (tests/test_serve.py runs
them through report.html and musiclime serve), and the report's audio and charts."""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ExplainConfig
from pipeline.driver import run_explain

CANARY = "document.documentElement.setAttribute('data-pwned','{}')"
PAYLOADS = [f'<img src=x onerror="{CANARY.format(1)}">', f"<script>{CANARY.format(2)}</script>",
            f"\"'><svg onload=\"{CANARY.format(3)}\">"]

PLUGIN = f'''
import re
import torch

PAYLOADS = {PAYLOADS!r}


class Hostile:
    classes = ["calm " + PAYLOADS[0], "storm " + PAYLOADS[1] + " $unbalanced"]
    sample_rate = 16000

    def predict_proba(self, audio, lyrics):
        storm = torch.tensor([float("storm" in re.findall(r"\\w+", s.lower())) for s in lyrics])
        p = torch.sigmoid(3.0 * storm.double() - 1.5 + audio.pow(2).mean(1).double())
        return torch.stack([1 - p, p], 1).numpy()


def make():
    return Hostile()
'''


def test_report_plays_the_cached_demucs_stems(ray_session, plugin_path, demo_library, tmp_path):
    """Before, a demucs run's report decoded the tracks without separation: the stems were
    named 'mix', the top stem-segments mask stayed empty and the player was silent."""
    from pipeline.catalogue import read_catalogue
    from pipeline.report import build_report
    from tests.demucs_tiny import save_tiny_demucs
    repo = save_tiny_demucs(tmp_path / "demucs")
    rows = [{k: v for k, v in r.items() if k != "catalogue_row"}
            for r in read_catalogue(demo_library / "catalogue.parquet", limit=2)]
    cat = tmp_path / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    out = tmp_path / "out"
    s = run_explain(ExplainConfig(catalogue=str(cat), model="mlplugins:make", out=str(out), separator="demucs",
                                  demucs_model="tiny", demucs_repo=str(repo), stem_cache=str(tmp_path / "stems"),
                                  num_samples=120, run_id="d"), show_progress=False)
    assert s.exit_code == 0, s.message
    page = build_report(out).read_text()
    players = re.findall(r"top positive stem-segments \(([^)]*)\)", page)
    assert len(players) == 2 and all(players), players
    assert all(p.split("@")[0] in ("vocals", "drums", "bass", "other") for p in players[0].split(", "))
    assert "not in the stem cache" not in page


def test_share_chart_draws_a_skewed_class_whose_mean_is_outside_its_quartiles():
    """Five tracks with audio shares 0, 0.9, 0.9, 0.9, 0.9: mean 0.72, first quartile 0.9.
    (An error bar from the mean refused such a class and took the report down.)"""
    import matplotlib
    matplotlib.use("Agg")
    from pipeline.report import _png, share_bars
    fig = share_bars(["skewed", "plain"], [0.72, 0.5], [0.9, 0.4], [0.9, 0.6], "audio vs lyrics")
    assert _png(fig).startswith("<img")
