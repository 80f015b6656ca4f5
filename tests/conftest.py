"""Session-wide fixtures: the demo library and a trained default model are built once."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# models, demo libraries and the stem cache of a test session never touch the user's
os.environ["MUSICLIME_HOME"] = tempfile.mkdtemp(prefix="musiclime-test-home-")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Each xdist worker shares two cores with the other and with Ray's workers: torch's OpenMP
# threads then spin against each other (measured: two trainings side by side took 93 s
# with two threads each, 44 s with one, 45 s with two that sleep instead of spinning, as
# fast as spinning when alone), so a worker's torch, and what it starts, takes one thread,
# and threads that wait sleep (the 2-thread quality model keeps its weights).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var, _value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
        os.environ.setdefault(_var, _value)


def pytest_configure(config):
    # A mismatched torch/torchaudio pair would fail dozens of tests with undefined symbols:
    # stop the session with the one line that says what is wrong instead.
    from musiclime.install_check import BrokenInstallError, check_torch_pair
    try:
        check_torch_pair()
    except BrokenInstallError as e:
        pytest.exit(f"broken install: {e}", returncode=4)


TEST_LIBRARY = dict(tracks=400, seed=0, sample_rate=16000, seconds=10.0)  # the demo default


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once for the whole session, however many xdist workers run it:
    the first worker to take the lock builds into a folder they all share, the others wait
    and reuse it (a failed build leaves no marker, so the next worker tries again)."""
    import fcntl
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the folder every worker's basetemp lies in
    out, done = base / f"shared-{name}", base / f"shared-{name}.done"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory):
    from musiclime.library import make_library
    return built_once(tmp_path_factory, "demo-library", lambda root: make_library(root, **TEST_LIBRARY))


@pytest.fixture(scope="session")
def genre_model_dir(demo_library, tmp_path_factory):
    """The offline default (log-mel CNN + MiniLM + MLP) trained for genre, seeded."""
    from musiclime.training import train_default
    def train(d: Path) -> None:  # the default's epochs
        import torch
        # The weights follow torch's thread count (CPU reductions add in another order), and
        # the quality thresholds were set on the model trained as on these 2-core machines
        # by default: two threads, whatever this worker's own count.
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            train_default(demo_library, "genre", "both", d / "default-genre", epochs=30, seed=0, verbose=False)
        finally:
            torch.set_num_threads(before)
    return built_once(tmp_path_factory, "models", train) / "default-genre"


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """``env`` set in this process (and what it starts) while inside; the old values after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3():
    """A real S3 API server (moto in server mode) on 127.0.0.1 for the whole session, and the
    environment that points clients at it, as a user's credential chain would; set before
    the session's Ray starts, so its workers read the bucket too. The secret is random, so
    a test can look for leaks."""
    import logging
    import secrets

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "musiclime-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t-" + secrets.token_hex(8),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ALLOW_HTTP": "true"}
    with environment(env):
        pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir("lib")
        yield env
    server.stop()


AZURITE = Path(__file__).with_name("azurite") / "node_modules" / ".bin" / "azurite-blob"


@pytest.fixture(scope="session")
def azure():
    """Azurite (the Azure Blob emulator, installed by ``make test`` from tests/azurite's
    lock) on 127.0.0.1 for the whole session, in memory, with an account whose key is random
    (a test can look for leaks), a container ``lib``, and the environment that points
    clients at it (delta-rs's names: see musiclime.azure_blob). Stopped at the end."""
    import base64
    import re
    import secrets
    import subprocess

    if not AZURITE.exists():
        pytest.skip(f"Azurite is not installed ({AZURITE}): `make test` installs it with npm")
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence", "--silent",
                             "--extentMemoryLimit", "2048", "--skipApiVersionCheck", "--disableTelemetry"],
                            env=dict(os.environ, AZURITE_ACCOUNTS=f"mlacct:{key}"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = None
    for line in proc.stdout:  # a few lines, then it listens
        m = re.search(r"listens on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail("Azurite did not start")
    env = {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": url,
           "AZURE_STORAGE_ACCOUNT_NAME": "mlacct", "AZURE_STORAGE_ACCOUNT_KEY": key}
    from azure.storage.blob import BlobServiceClient
    BlobServiceClient(f"{url}/mlacct", credential={"account_name": "mlacct", "account_key": key}).create_container(
        "lib")
    with environment(env):
        yield env
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def gcs():
    """A GCS emulator (gcp-storage-emulator, from the lock) on 127.0.0.1 in its own process,
    in memory, with a bucket ``lib``, and ``STORAGE_EMULATOR_HOST`` pointing clients at it.
    It serves reads; its writes ignore generation preconditions, which is why gs:// outputs
    stay refused. Stopped at the end."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:  # a free port (the emulator cannot report one it picked)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen([str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                             "--default-bucket", "lib"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{host}/storage/v1/b/lib", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the GCS emulator did not start")
    with environment({"STORAGE_EMULATOR_HOST": host}):
        yield host
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def ray_session(plugin_path, s3):
    """One real local Ray for the whole test session (workers see the test plugins and the
    S3 server's environment)."""
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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Under xdist (``make test`` runs two workers, ``--dist loadgroup``), the multi-node
    cluster tests are one group, one cluster at a time, sent first: one worker runs that
    chain (about 11 minutes) while the other starts on the trained default model's tests
    (its training, minutes, then overlaps the clusters instead of holding the last tests
    up), then everything else. xdist gives a worker a group whole and more work only when
    it is nearly done, so only chains that must be serial are groups, besides the modules
    whose module fixtures explain (built once instead of once per worker)."""
    clusters = [i for i in items if i.path.name in ("test_multinode.py", "test_cluster.py")]
    for item in clusters:
        item.add_marker(pytest.mark.xdist_group("clusters"))
    first = [i for i in items if "genre_model_dir" in getattr(i, "fixturenames", ()) and i not in clusters]
    for item in items:
        if item.path.name in SHARED_FIXTURE_MODULES and item not in first and item not in clusters:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items[:] = clusters + first + [i for i in items if i not in first and i not in clusters]
    _group_node_ids(config, items)


def _group_node_ids(config, items) -> None:
    """What pytest-xdist's worker hook does for ``--dist loadgroup``: suffix each marked
    test's node id with ``@group``, which the scheduler groups by. xdist 3.8 sets
    ``item._nodeid``, which pytest 9.2 no longer reads (node ids live in ``item._id``), so
    without this every group is silently split over the workers (each then builds the
    group's module fixtures again)."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            from _pytest.nodeid import coerce_node_id
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


# modules with a module-scoped fixture that costs tens of seconds (an explain run, a library
# in every format): split over two workers, each worker would build it again
SHARED_FIXTURE_MODULES = ("test_serve.py", "test_aggregate.py", "test_pipeline.py")
