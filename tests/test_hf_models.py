"""Models a user can name: each spec kind resolves (before Ray) and explains end to end.
Offline: tiny random-init Hugging Face models saved as folders and laid out as the HF cache
under a temporary HF_HOME. (The download itself cannot be tested here: no network.)"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from musiclime.models.hf import NoSafetensorsError
from musiclime.models.registry import ModelNotAvailable, load_model, resolve
from pipeline import output
from tests.hf_tiny import LABELS, as_hub_cache, tiny_ast_classifier, tiny_text_classifier

MUSICLIME = str(Path(sys.executable).parent / "musiclime")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"audio": tiny_ast_classifier(root / "audio"), "tagger": tiny_ast_classifier(root / "tagger", True),
            "text": tiny_text_classifier(root / "text")}


@pytest.fixture()
def hub(folders, tmp_path, monkeypatch):
    """The text classifier as the HF cache holds hf:acme/lyrics-mood, hub switched off."""
    from huggingface_hub import constants
    as_hub_cache(folders["text"], tmp_path / "hf", "acme/lyrics-mood", COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


def test_folder_kinds_resolve_from_their_config(folders):
    a, t = torch.randn(2, 16000 * 3), ["fire and rain tonight", "quiet"]
    audio = resolve(str(folders["audio"]))
    assert (audio.kind, audio.modality, audio.max_seconds) == ("hf-audio-classifier", "audio", pytest.approx(2.56))
    text = resolve(str(folders["text"]))
    assert (text.kind, text.modality, text.max_seconds) == ("hf-text-classifier", "lyrics", None)
    for name in ("audio", "tagger", "text"):
        m = load_model(str(folders[name]))
        assert m.classes == LABELS and m.sample_rate == 16000 and m.model_id
        p = m.predict_proba(a, t)
        assert p.shape == (2, 3) and bool(((p >= 0) & (p <= 1)).all())
        if name == "tagger":  # multi-label: independent sigmoid scores
            assert not torch.allclose(p.sum(1), torch.ones(2))
        else:
            torch.testing.assert_close(p.sum(1), torch.ones(2))
    # an audio classifier ignores lyrics, a text classifier ignores audio
    m = load_model(str(folders["audio"]))
    torch.testing.assert_close(m.predict_proba(a, t), m.predict_proba(a, ["x", "y"]))
    m = load_model(str(folders["text"]))
    torch.testing.assert_close(m.predict_proba(a, t), m.predict_proba(torch.zeros(2, 5), t))


def test_hub_spec_loads_from_the_cache_pinned_to_its_commit(hub):
    for spec in ("hf:acme/lyrics-mood", "hf:acme/lyrics-mood@main", f"hf:acme/lyrics-mood@{COMMIT}"):
        ref = resolve(spec)
        assert (ref.kind, ref.location, ref.modality) == ("hf-text-classifier", f"hf:acme/lyrics-mood@{COMMIT}",
                                                          "lyrics")
    model = load_model(f"hf:acme/lyrics-mood@{COMMIT}")
    assert model.classes == LABELS


def test_a_hub_model_offline_and_not_cached_fails_with_one_clear_line(hub):
    with pytest.raises(ModelNotAvailable) as e:
        resolve("hf:acme/absent@v2")
    msg = str(e.value)
    assert "\n" not in msg and "hf:acme/absent@v2" in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download acme/absent --revision v2" in msg and str(hub / "hub") in msg


def test_only_safetensors_are_loaded_and_other_files_never_opened(folders, tmp_path):
    import shutil
    trap = tmp_path / "opened"
    d = tmp_path / "with-extras"
    shutil.copytree(folders["audio"], d)

    class Trap:
        def __reduce__(self):
            return (open, (str(trap), "w"))
    for name in ("training_args.bin", "pytorch_model.bin", "optimizer.pt"):
        (d / name).write_bytes(pickle.dumps(Trap()))
    assert load_model(str(d)).classes == LABELS and not trap.exists()
    only_pickle = tmp_path / "pickle-only"
    shutil.copytree(folders["audio"], only_pickle)
    (only_pickle / "model.safetensors").unlink()
    (only_pickle / "pytorch_model.bin").write_bytes(pickle.dumps(Trap()))
    with pytest.raises(NoSafetensorsError, match="no .safetensors weights .*pytorch_model.bin"):
        resolve(str(only_pickle))
    assert not trap.exists()


@pytest.mark.parametrize("spec,says", [("no-such-thing", "hf:ORG/NAME"), ("hf:bad", "hf:ORG/NAME"),
                                       ("/", "has no config.json")])
def test_a_spec_that_names_nothing_exits_2_before_ray(spec, says, tmp_path):
    cat = tmp_path / "c.csv"
    cat.write_text("track_id,audio_path\na,a.wav\n")
    r = subprocess.run([MUSICLIME, "explain", str(cat), "--model", spec, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert not (tmp_path / "o" / "runs").exists()  # nothing started


def _catalogue(root: Path) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        sf.write(root / f"t{i}.wav", rng.normal(0, 0.1, 16000 * 4).astype(np.float32), 16000)
        rows.append(dict(track_id=f"t{i}", audio_path=f"t{i}.wav", lyrics="fire and rain in the city light night"))
    pq.write_table(pa.Table.from_pylist(rows), root / "catalogue.parquet")
    return str(root / "catalogue.parquet")


def test_an_audio_classifier_folder_explains_audio_alone(folders, tmp_path, ray_session):
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    said: list[str] = []
    out = str(tmp_path / "out")
    s = run_explain(ExplainConfig(catalogue=_catalogue(tmp_path), model=str(folders["audio"]), out=out,
                                  separator="hpss", num_samples=40, segments=4, stem_cache=str(tmp_path / "stems")),
                    log=said.append, show_progress=False)
    assert s.exit_code == 0, s.message
    assert any("explained on audio alone, lyrics ignored" in line for line in said)
    tracks = output.frame(out, "tracks")
    assert tracks["modality"].unique().to_list() == ["audio"]
    assert all("cropped_to_model" in f for f in tracks["flags"])       # 4 s cut to AST's 2.56 s
    assert tracks["duration_s"].to_list() == pytest.approx([2.56] * 3)
    expl = output.frame(out, "explanations")
    assert expl["modality"].unique().to_list() == ["audio"] and set(expl["label"]) <= set(LABELS)
    doc = json.loads((tmp_path / "out" / "run.json").read_text())
    assert doc["classes"] == LABELS and doc["settings"]["modality"] == "audio"


def test_a_text_classifier_never_reads_the_audio(folders, tmp_path, ray_session):
    """Lyrics alone: a missing, a corrupt and no audio file are no error, nothing is separated."""
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain
    (tmp_path / "bad.wav").write_bytes(b"RIFF not a wav")
    rows = [dict(track_id="gone", audio_path="nowhere.wav"), dict(track_id="bad", audio_path="bad.wav"),
            dict(track_id="none", audio_path=None)]
    rows = [dict(r, lyrics="fire and rain in the city light night") for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "lyrics.parquet")
    out = str(tmp_path / "out")
    stems = tmp_path / "stems"
    def night(run_id: str):
        return run_explain(ExplainConfig(catalogue=str(tmp_path / "lyrics.parquet"), model=str(folders["text"]),
                                         out=out, separator="hpss", num_samples=40, segments=4, stem_cache=str(stems),
                                         incremental=True, run_id=run_id), show_progress=False)
    s = night("n1")
    assert s.exit_code == 0 and s.failed == 0, [e.message for e in s.errors]
    tracks = output.frame(out, "tracks")
    assert sorted(tracks["track_id"]) == ["bad", "gone", "none"] and tracks["modality"].unique().to_list() == ["lyrics"]
    assert all("audio_not_used" in f for f in tracks["flags"]) and tracks["duration_s"].to_list() == [0.0] * 3
    assert not stems.exists() or not any(stems.rglob("*.*"))       # nothing was separated
    expl = output.frame(out, "explanations")
    assert expl["modality"].unique().to_list() == ["lyrics"] and {"fire", "rain", "city"} <= set(expl["token"])
    # the next night: audio files changed or appeared and one track's lyrics changed; only
    # the lyrics decide what a text classifier's night explains again
    (tmp_path / "bad.wav").write_bytes(b"RIFF still not a wav, but longer")
    (tmp_path / "nowhere.wav").write_bytes(b"RIFF")
    rows[2]["lyrics"] = "fire and rain over the harbour"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "lyrics.parquet")
    s2 = night("n2")
    assert (s2.exit_code, s2.computed, s2.unchanged) == (0, 1, 2), s2.message
    assert sorted(output.frame(out, "tracks", ["track_id"], ["n2"])["track_id"]) == ["none"]


def test_a_hub_text_classifier_explains_lyrics_alone_through_the_cli(folders, hub, tmp_path):
    env = dict(os.environ, HF_HOME=str(hub), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    out = tmp_path / "out"
    r = subprocess.run([MUSICLIME, "explain", _catalogue(tmp_path), "--model", "hf:acme/lyrics-mood", "--out",
                        str(out), "--separator", "none", "--num-samples", "40", "--segments", "4", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    doc = json.loads((out / "run.json").read_text())
    assert doc["config"]["model"] == f"hf:acme/lyrics-mood@{COMMIT}" and doc["classes"] == LABELS
    expl = pl.read_parquet(str(out / "explanations" / "**" / "*.parquet"))
    assert expl["modality"].unique().to_list() == ["lyrics"]
    assert {"fire", "rain", "city"} <= set(expl["token"])
