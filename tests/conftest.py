"""Session-wide fixtures: the demo library and a trained default model are built once."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_LIBRARY = dict(tracks=250, seed=0, sample_rate=16000, seconds=10.0)


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory):
    from musiclime.library import make_library
    root = tmp_path_factory.mktemp("demo-library")
    make_library(root, **TEST_LIBRARY)
    return root


@pytest.fixture(scope="session")
def genre_model_dir(demo_library, tmp_path_factory):
    """The offline default (log-mel CNN + MiniLM + MLP) trained for genre, seeded."""
    from musiclime.training import train_default
    out = tmp_path_factory.mktemp("models") / "default-genre"
    return train_default(demo_library, "genre", "both", out, epochs=15, seed=0, verbose=False)
