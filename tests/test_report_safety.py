"""Every value that reaches report.html is escaped: class names (from checkpoints and
plugins), track ids, lyrics, error types, stages and messages carry script payloads, and
Chromium runs the page to check that none of them ran."""
from __future__ import annotations

import re
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def test_report_escapes_every_value(ray_session, plugin_path, demo_library, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it in CI)")
    (plugin_path / "hostile_plugin.py").write_text(PLUGIN)
    from pipeline.catalogue import read_catalogue
    demo = [r for r in read_catalogue(demo_library / "catalogue.parquet")][:2]
    rows = []
    for i, (r, payload) in enumerate(zip(demo, PAYLOADS)):
        rows.append({**{k: v for k, v in r.items() if k != "catalogue_row"},
                     "track_id": f"t{i} {payload}", "lyrics": f"storm {payload} night"})
    # tags are untrusted too: a title and an artist carrying payloads, read from the file
    import shutil as sh

    from mutagen.flac import FLAC
    tagged = tmp_path / "tagged.flac"
    sh.copy(demo_library / demo[0]["audio_path"], tagged)
    f = FLAC(tagged)
    f["title"], f["artist"] = f"Song {PAYLOADS[1]}", f"Band {PAYLOADS[0]}"
    f.save()
    rows[0]["audio_path"] = str(tagged)
    # a row whose error message quotes a path carrying a payload
    rows.append({**rows[0], "track_id": f"bad {PAYLOADS[2]}",
                 "vocals_path": str(tmp_path / PAYLOADS[0].replace("/", "_"))})
    cat = tmp_path / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), cat)
    out = tmp_path / "out"
    s = run_explain(ExplainConfig(catalogue=str(cat), model="hostile_plugin:make", out=str(out),
                                  separator="provided", num_samples=120, run_id="xss"), show_progress=False)
    assert s.exit_code == 3, s.message
    from pipeline.report import build_report
    page = build_report(out).read_text()
    assert "&lt;img src=x onerror=" in page and "&lt;script&gt;" in page
    assert "Song &lt;script&gt;" in page and "Band &lt;img" in page  # the tags are shown, escaped
    assert "<img src=x" not in page and "<script>document" not in page and "<svg onload" not in page
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "musiclime report" in dom.stdout, dom.stderr[-2000:]
    # a payload that ran would have set the attribute on <html>; as text it may appear escaped
    html_tag = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert "data-pwned" not in html_tag, html_tag
    assert "&lt;img src=x onerror=" in dom.stdout
    assert 'data-error="' not in dom.stdout  # and the page's own scripts raised nothing


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
