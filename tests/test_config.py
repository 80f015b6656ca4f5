"""Options are checked once, when the config is built: from Python a ValueError, from the
CLI exit 2 before any catalogue is read or Ray is started."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import ExplainConfig

MUSICLIME = str(Path(sys.executable).parent / "musiclime")
BASE = dict(catalogue="c.parquet", model="default", out="o")


@pytest.mark.parametrize("option,value,says", [
    ("separator", "spleeter", "separator must be one of"), ("labels", "topk:0", "labels topk:N needs a count"),
    ("modality", "video", "modality must be one of"), ("design", "sobol", "design must be one of"),
    ("feature_selection", "best", "feature_selection must be one of"), ("num_samples", 0, "num_samples"),
    ("num_samples", "many", "num_samples"), ("segments", 0, "segments"), ("predictors", 0, "predictors"),
    ("batch_size", -1, "batch_size"), ("max_words", -1, "max_words"), ("max_seconds", 0, "max_seconds"),
    ("gpus_per_predictor", -0.5, "gpus_per_predictor"), ("run_id", "a\nb", "run id"),
    ("lease_timeout", 0, "lease_timeout"), ("commit_every", 0, "commit_every"),
    ("predictors", "3:2", "MIN:MAX"), ("predictors", "0:2", "MIN:MAX"), ("predictors", "some", "MIN:MAX"),
    ("format", "orc", "output_format must be one of"), ("precision", "fp8", "precision must be one of"),
])
def test_bad_values_from_python_fail_when_the_config_is_built(option, value, says):
    with pytest.raises(ValueError, match=says):
        ExplainConfig(**BASE, **{option: value})


def test_good_values_and_the_designs_registry():
    from musiclime.designs import CHOICES, DESIGNS
    from musiclime.explainer import DESIGN_CHOICES
    assert DESIGN_CHOICES == CHOICES == ("auto",) + tuple(DESIGNS)
    for d in CHOICES:
        ExplainConfig(**BASE, design=d, num_samples="auto")
    for t in ("auto", "probability", "log_odds"):
        ExplainConfig(**BASE, target=t)
    with pytest.raises(ValueError, match="log_odds"):
        ExplainConfig(**BASE, target="logit")
    from pipeline.config import PoolSize
    from pipeline.resources import pool_target
    pools = {v: ExplainConfig(**BASE, predictors=v).pool for v in (3, "3", "2:5", "auto")}
    assert pools == {3: PoolSize(3, 3), "3": PoolSize(3, 3), "2:5": PoolSize(2, 5), "auto": PoolSize(1, None)}
    # auto follows the cluster: floor(GPUs / GPUs per actor); without GPUs one per 4 CPUs
    assert pool_target(pools["auto"], 0.5, {"GPU": 3.0, "CPU": 64}) == 6
    assert pool_target(pools["auto"], 0.0, {"CPU": 2.0}) == 1 and pool_target(pools["auto"], 0.0, {"CPU": 17}) == 4
    assert pool_target(pools["2:5"], 1.0, {"GPU": 1.0}) == 5  # MAX is asked for: the autoscaler's demand


@pytest.mark.parametrize("args", [["--num-samples", "1"], ["--max-words", "-3"], ["--segments", "0"],
                                  ["--predictors", "4:1"],
                                  ["--batch-size", "lots"]])
def test_cli_exits_2_before_reading_or_starting_anything(tmp_path, args):
    t0 = time.perf_counter()
    r = subprocess.run([MUSICLIME, "explain", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o"),
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "musiclime explain:" in r.stderr, r.stderr[-1000:]
    assert "no catalogue" not in r.stderr  # the option was refused first
    assert not (tmp_path / "o").exists()
    assert time.perf_counter() - t0 < 30  # no Ray was started


# Config hashes name every standing incremental output: a drift re-explains every user's
# library on its next night. These were computed by the release before the options were
# declared once (and must stay as they are).
GOLDEN_HASHES = {
    "default": ({}, "a647243cbbdd66ed"),
    "num_samples_auto": ({"num_samples": "auto"}, "603e7d4fe9e9338c"),
    "iid_design": ({"design": "iid"}, "6d9b122d85f66e65"),
    "log_odds_all_labels": ({"target": "log_odds", "labels": "all"}, "d891d3404e106971"),
    "demucs_20_segments": ({"separator": "demucs", "segments": 20, "seed": 7}, "e675ffcb36ce2f4e"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_HASHES))
def test_config_hashes_are_pinned(name):
    overrides, expected = GOLDEN_HASHES[name]
    cfg = ExplainConfig(catalogue="c.parquet", model="m", out="o", **overrides)
    assert cfg.config_hash("model-sha") == expected
    # how the work is spread never enters the hash
    spread = replace(cfg, predictors="2:4", batch_size=8, commit_every=7, address="auto", limit=3)
    assert spread.config_hash("model-sha") == expected


def test_a_new_option_left_at_its_default_changes_no_hash(monkeypatch):
    """An option added later declares ``hashed_since`` (the value that behaves as before):
    left there it is not in the settings, so no standing output's hash moves; set to
    anything else it is. Simulated with an existing unhashed option made hashed."""
    from pipeline import config
    base = ExplainConfig(catalogue="c.parquet", model="m", out="o")
    before = base.config_hash("model-sha")
    new = replace(config.OPTIONS["commit_every"], hashed=True, hashed_since=64)
    monkeypatch.setitem(config.OPTIONS, "commit_every", new)
    monkeypatch.setattr(config, "RESULT_SETTINGS", config.RESULT_SETTINGS + ("commit_every",))
    assert base.config_hash("model-sha") == before
    assert "commit_every" not in base.settings()
    assert replace(base, commit_every=8).config_hash("model-sha") != before
    assert replace(base, commit_every=8).settings()["commit_every"] == 8


def test_every_option_is_declared_once_and_reaches_the_command_line():
    import argparse

    from pipeline.config import OPTIONS, add_arguments, from_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(["cat.parquet", "--out", "o", "--num-samples", "auto", "--predictors", "2:3",
                       "--batch-size", "16", "--incremental", "--target", "log_odds", "--limit", "5"])
    cfg = from_arguments(ns)
    assert (cfg.num_samples, cfg.predictors, cfg.batch_size, cfg.incremental, cfg.target, cfg.limit) == \
        ("auto", "2:3", 16, True, "log_odds", 5)
    defaults = from_arguments(p.parse_args(["cat.parquet", "--out", "o"]))
    assert defaults == ExplainConfig(catalogue="cat.parquet", out="o")  # the CLI's defaults are the object's
    # choices come from the enums that validate them
    from musiclime.surrogate import FeatureSelection, Target
    assert list(OPTIONS["target"].choices()) == [t.value for t in Target]
    assert list(OPTIONS["feature_selection"].choices()) == [f.value for f in FeatureSelection]
    every = {a.dest for a in p._actions}
    assert {n for n, o in OPTIONS.items() if o.cli} <= every
    assert not {n for n, o in OPTIONS.items() if not o.cli} & every
