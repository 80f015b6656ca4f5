"""Data flows one way: the core (musiclime) imports neither pipeline nor actors; actors
import the core, never pipeline; the per-track stages run without Ray or Polars."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(package: str) -> dict[str, set[str]]:
    out = {}
    for f in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(f.relative_to(ROOT))] = names
    return out


def test_no_import_goes_back_up():
    core = {f: n & {"pipeline", "actors"} for f, n in imported("musiclime").items()}  # schemas is a leaf
    assert {f: n for f, n in core.items() if n} == {}
    acts = {f: n & {"pipeline"} for f, n in imported("actors").items()}
    assert {f: n for f, n in acts.items() if n} == {}


def test_the_stages_run_without_ray_or_polars():
    """The stages run without Ray (a GPU benchmark runs the GPU stage on a machine without
    it); the actor around the GPU stage is the Ray layer (its probe thread is a Ray
    concurrency group) and pulls in nothing of the pipeline."""
    code = ("import sys, musiclime.stages, musiclime.records, musiclime.gpu_stage; "
            "print(sorted(m for m in ('ray', 'polars', 'pipeline') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stderr[-1000:]
    code = "import sys, actors; print(sorted(m for m in ('polars', 'pipeline') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stderr[-1000:]


def test_model_definitions_live_under_models_and_never_import_training():
    """musiclime/models holds every model definition (the default model and the no-lyrics
    encoder included); training imports the models, never the other way round."""
    modules = {}
    for f in (ROOT / "musiclime" / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.setdefault(str(f.relative_to(ROOT)), set()).add(node.module)
    assert {f: m for f, m in modules.items() if "musiclime.training" in m} == {}
    from musiclime.models.fusion import default_model
    from musiclime.models.lyrics import NoLyrics
    assert default_model(["a", "b"], 16000, "audio").lyrics_encoder.__class__ is NoLyrics
