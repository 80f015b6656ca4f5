"""Session-wide fixtures: the demo library and a trained default model are built once."""
from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# models, demo libraries and the stem cache of a test session never touch the user's
os.environ["MUSICLIME_HOME"] = tempfile.mkdtemp(prefix="musiclime-test-home-")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")



def pytest_configure(config):
    # A mismatched torch/torchaudio pair would fail dozens of tests with undefined symbols:
    # stop the session with the one line that says what is wrong instead.
    from musiclime.install_check import BrokenInstallError, check_torch_pair
    try:
        check_torch_pair()
    except BrokenInstallError as e:
        pytest.exit(f"broken install: {e}", returncode=4)


TEST_LIBRARY = dict(tracks=400, seed=0, sample_rate=16000, seconds=10.0)  # the demo default


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
    return train_default(demo_library, "genre", "both", out, epochs=30, seed=0, verbose=False)  # the default


@pytest.fixture(scope="session")
def ray_session(plugin_path):
    """One real local Ray for the whole test session (workers see the test plugins)."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory):
    """A folder on PYTHONPATH holding the planted test plugin (see tests/plugins.py)."""
    import shutil
    import sys
    from pathlib import Path
    d = tmp_path_factory.mktemp("plugins")
    shutil.copy(Path(__file__).with_name("plugins.py"), d / "mlplugins.py")
    sys.path.insert(0, str(d))
    os.environ["PYTHONPATH"] = str(d) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return d
