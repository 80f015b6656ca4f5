"""``musiclime serve`` against real outputs: two nights of demo tracks explained by a model
whose classes, and tracks whose ids, tags, lyrics and error messages, carry script payloads;
a real browser (Selenium driving Debian's chromium through chromium-driver); the token,
Host and read-only rules; a Delta output on the S3 test server; a bounded load test."""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.bench_serve import load_test, request_mix, start_server
from bench.serve_synth import write_synthetic
from pipeline.config import ExplainConfig
from pipeline.driver import run_explain
from tests.browser import browser, playable
from tests.test_report_safety import PAYLOADS, PLUGIN


@pytest.fixture(scope="module")
def served(ray_session, plugin_path, demo_library, tmp_path_factory):
    """Two nights over 4 demo tracks, n1 separating with hpss, n2 reading provided stems: one
    track tagged with payloads, one whose id and lyrics carry payloads, one whose audio and
    vocals files tests touch, and a row whose files are missing; both nights aggregated."""
    from mutagen.flac import FLAC

    from pipeline.catalogue import read_catalogue
    from pipeline.global_importance import aggregate, write_global_importance
    root = tmp_path_factory.mktemp("serve")
    (plugin_path / "hostile_plugin.py").write_text(PLUGIN)
    demo = [{k: v for k, v in r.items() if k != "catalogue_row"}
            for r in read_catalogue(demo_library / "catalogue.parquet", limit=4)]
    tagged = root / "tagged.flac"
    shutil.copy(demo[0]["audio_path"], tagged)
    f = FLAC(tagged)
    f["title"], f["artist"], f["album"] = f"Song {PAYLOADS[1]}", f"Band {PAYLOADS[0]}", "Quiet Album"
    f.save()
    demo[0] = {**demo[0], "audio_path": str(tagged), "track_id": "tagged-0"}
    demo[1] = {**demo[1], "track_id": f"t1 {PAYLOADS[0]}", "lyrics": f"storm {PAYLOADS[2]} night storm"}
    changing = root / "changing.flac"  # a file a test touches: its audio must then not be played
    shutil.copy(demo[2]["audio_path"], changing)
    shutil.copy(demo[2]["vocals_path"], root / "changing-vocals.flac")
    demo[2] = {**demo[2], "audio_path": str(changing), "vocals_path": str(root / "changing-vocals.flac"),
               "track_id": "changing-2"}
    missing = str(root / PAYLOADS[0].replace("/", "_"))  # an error message quoting a path with a payload
    bad = {**demo[3], "track_id": f"bad {PAYLOADS[2]}", "audio_path": missing, "vocals_path": missing}
    cat = root / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(demo + [bad]), cat)
    out = root / "out"
    for run, separator in (("n1", "hpss"), ("n2", "provided")):
        s = run_explain(ExplainConfig(catalogue=str(cat), model="hostile_plugin:make", out=str(out), separator=separator,
                                      stem_cache=str(root / "stems"), num_samples=200, run_id=run), show_progress=False)
        assert s.exit_code == 3, s.message  # the missing file
        write_global_importance(str(out), aggregate(str(out), night=run))
    return out


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    cache = tmp_path_factory.mktemp("serve-index")
    proc, port, _ = start_server(str(served), str(cache))
    yield "127.0.0.1", port, cache
    proc.terminate()
    proc.wait(timeout=30)


@contextlib.contextmanager
def touched(path, by_ns: int):
    """``path``'s modification time moved by ``by_ns`` for the block, then put back."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + by_ns))
    try:
        yield
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def get(port: int, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None,
        host: str = "127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read().decode("utf-8", "replace") if r.getheader("content-type", "").startswith("text") else r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def test_the_report_escapes_every_value(served, tmp_path):
    """Class names (from the model), track ids, tags, lyrics and error messages carry script
    payloads; Chromium runs report.html to check that none of them ran."""
    from pipeline.report import build_report
    page = build_report(served).read_text()
    assert "&lt;img src=x onerror=" in page and "&lt;script&gt;" in page
    assert "Song &lt;script&gt;" in page and "Band &lt;img" in page  # the tags are shown, escaped
    assert "<img src=x" not in page and "<script>document" not in page and "<svg onload" not in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it in CI)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          (served / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert "musiclime report" in dom.stdout, dom.stderr[-2000:]
    # a payload that ran would have set the attribute on <html>; as text it may appear escaped
    html_tag = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert "data-pwned" not in html_tag, html_tag
    assert "&lt;img src=x onerror=" in dom.stdout
    assert 'data-error="' not in dom.stdout  # and the page's own scripts raised nothing


def test_tracks_record_where_the_audio_was_and_the_lyrics_explained(served):
    from musiclime import storage
    from pipeline import output
    t = output.frame(str(served), "tracks", ["track_id", "audio_path", "audio_key", "lyrics"], ["n1"])
    row = t.filter(t["track_id"] == "changing-2").row(0, named=True)
    assert row["audio_path"].endswith("changing.flac") and row["audio_key"] == storage.version_key(row["audio_path"])
    assert PAYLOADS[2] in t.filter(t["track_id"] == f"t1 {PAYLOADS[0]}")["lyrics"][0]


def test_search_track_class_and_error_pages(server):
    _, port, _ = server
    status, headers, page = get(port, "/?" + urlencode({"q": "quiet album"}))  # an album tag, any case
    assert status == 200 and page.count('href="/track/tagged-0?run=') == 2  # both nights
    assert "default-src 'none'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    _, _, page = get(port, "/?" + urlencode({"run": "n1", "status": "error"}))
    assert "missing_file" in page and "1 row " in page
    _, _, page = get(port, "/?" + urlencode({"run": "n2", "status": "ok", "sort": "prob", "per": 2, "page": 2}))
    assert "4 rows" in page and "page 2 of 2" in page and 'rel="prev"' in page and 'rel="next"' not in page
    status, _, page = get(port, "/track/tagged-0")
    assert status == 200 and "night n2" in page  # the latest night by default
    assert page.count('class="cell"') == 4 * 10 and re.search("±[0-9]", page)  # with standard errors
    assert 'class="w w-' in page and 'id="original"' in page and 'id="top"' in page
    history = page.split('id="history"')[1]
    assert ">n1<" in history and ">n2<" in history and "top-5 here" in history
    status, _, page = get(port, "/track/tagged-0?run=n1")
    assert status == 200 and "night n1" in page
    status, headers, audio = get(port, "/audio/original/tagged-0?run=n1")
    assert status == 200 and headers["content-type"] == "audio/wav" and audio[:4] == b"RIFF"
    status, _, top = get(port, "/audio/top/tagged-0?run=n1")
    assert status == 200 and top[:4] == b"RIFF" and top != audio
    status, headers, part = get(port, "/audio/top/tagged-0?run=n1", {"Range": "bytes=100-199"})
    assert status == 206 and part == top[100:200] and headers["content-range"] == f"bytes 100-199/{len(top)}"
    assert get(port, "/audio/top/tagged-0?run=n1", {"Range": f"bytes={len(top) + 5}-"})[0] == 416
    status, _, page = get(port, "/classes?run=n2")
    assert status == 200 and page.count('href="/class/') == 2
    label = "storm " + PAYLOADS[1] + " $unbalanced"
    status, _, page = get(port, f"/class/{quote(label, safe='')}?run=n2")
    assert status == 200 and page.count('class="cell"') == 40 and "tracks that carry it" in page
    status, _, page = get(port, "/errors?run=n1")
    assert status == 200 and "missing_file" in page and 'href="/catalogue/n1/4"' in page
    status, _, page = get(port, "/catalogue/n1/4")
    assert status == 200 and "audio_path" in page and "&lt;img src=x" in page


def test_bad_parameters_are_400_unknown_ids_404_and_never_a_traceback(server):
    _, port, _ = server
    cases = {"/?page=x": 400, "/?per=100000": 400, "/?sort=evil": 400, "/?topk=maybe": 400, "/?q=" + "a" * 300: 400,
             "/track/nope": 404, "/track/tagged-0?run=n9": 404, "/track/tagged-0?label=nope": 404,
             "/audio/original/nope": 404, "/audio/wav/tagged-0": 404, "/class/nope": 404, "/errors?run=n9": 404,
             "/catalogue/n1/x": 400, "/catalogue/n9/1": 404, "/audio/original/..%2F..%2F..%2Fetc%2Fpasswd": 404,
             "/static/..%2F..%2Fapp.py": 404}
    for path, want in cases.items():
        status, _, body = get(port, path)
        assert status == want, (path, status, body[:300])
        assert "Traceback" not in str(body) and 'File "' not in str(body), path
    _, _, body = get(port, "/?page=x")
    assert "page must be a whole number" in body


def test_every_value_is_escaped_and_no_payload_runs_in_a_browser(server, tmp_path):
    _, port, _ = server
    base = f"http://127.0.0.1:{port}"
    pages = ["/", "/track/" + quote(f"t1 {PAYLOADS[0]}", safe=""), "/track/" + quote(f"bad {PAYLOADS[2]}", safe=""),
             "/track/tagged-0", "/errors?run=n1", "/classes",
             "/class/" + quote("calm " + PAYLOADS[0], safe="") + "?run=n1", "/catalogue/n1/4",
             "/?" + urlencode({"q": PAYLOADS[1]})]
    for p in pages:
        status, _, body = get(port, p)
        assert status == 200, (p, body[:300])
        assert "<img src=x" not in body and "<script>document" not in body and "<svg onload" not in body, p
    _, _, body = get(port, "/track/tagged-0")
    assert "Song &lt;script&gt;" in body and "Band &lt;img" in body
    _, _, body = get(port, "/track/" + quote(f"bad {PAYLOADS[2]}", safe=""))  # a track that only failed
    assert "missing_file" in body and 'href="/catalogue/n2/4"' in body  # its latest night
    with browser(tmp_path) as d:
        for p in pages:
            d.get(base + p)
            assert d.execute_script("return document.documentElement.getAttribute('data-pwned')") is None, p
        assert not [e for e in d.get_log("browser") if "Content Security Policy" in e["message"]]


def test_a_browser_searches_opens_a_track_and_plays_its_audio(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    _, port, _ = server
    with browser(tmp_path) as d:
        d.get(f"http://127.0.0.1:{port}/")
        box = d.find_element(By.NAME, "q")
        box.send_keys("Quiet")
        box.submit()
        WebDriverWait(d, 20).until(lambda d: "row" in d.find_element(By.ID, "count").text)
        assert d.find_element(By.ID, "count").text.startswith("2 rows")
        d.find_element(By.CSS_SELECTOR, "table.results a[href^='/track/tagged-0']").click()
        WebDriverWait(d, 20).until(lambda d: d.title.startswith("Track tagged-0"))
        assert len(d.find_elements(By.CSS_SELECTOR, "#heatmap svg.heatmap g.cell")) == 40
        assert len(d.find_elements(By.CSS_SELECTOR, "#lyrics span.w")) >= 3
        assert playable(d, "original") > 5 and playable(d, "top") > 5


def test_a_changed_audio_file_is_not_played(server, served):
    import polars as pl

    from pipeline import output
    _, port, _ = server
    t = output.frame(str(served), "tracks", ["track_id", "audio_path"], ["n1"])
    path = t.filter(pl.col("track_id") == "changing-2")["audio_path"][0]
    with touched(path, 10**9):
        status, _, page = get(port, "/track/changing-2?run=n1")
        assert status == 200 and "has changed since this night" in page and 'id="original"' not in page
        status, _, body = get(port, "/audio/original/changing-2?run=n1")
        assert status == 409 and "changed" in body
    assert get(port, "/audio/original/changing-2?run=n1")[0] == 200


def test_the_server_writes_nothing(server, served):
    _, port, cache = server

    def tree(root: Path) -> dict:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}
    before = (tree(served), tree(cache))
    for path in ("/", "/track/tagged-0", "/audio/top/tagged-0", "/classes", "/errors", "/catalogue/n1/0"):
        assert get(port, path)[0] == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert get(port, "/track/tagged-0", method=method, body=b"x")[0] == 405
    assert (tree(served), tree(cache)) == before


def test_token_and_host_rules(served, tmp_path):
    exe = Path(sys.executable).with_name("musiclime")
    refused = subprocess.run([str(exe), "serve", str(served), "--host", "0.0.0.0", "--port", "0", "--index-cache",
                              str(tmp_path / "ix")], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "MUSICLIME_SERVE_TOKEN"})
    assert refused.returncode == 2 and "MUSICLIME_SERVE_TOKEN" in refused.stderr
    token = "tok-" + os.urandom(12).hex()
    (tmp_path / "token").write_text(token + "\n")
    proc, port, _ = start_server(str(served), str(tmp_path / "ix"),
                                 extra=["--host", "0.0.0.0", "--token-file", str(tmp_path / "token")])
    try:
        assert get(port, "/track/tagged-0")[0] == 401
        assert get(port, f"/track/tagged-0?token={token}")[0] == 401  # never from the URL
        assert get(port, "/audio/original/tagged-0", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(port, "/track/tagged-0", {"Authorization": f"Bearer {token}"})[0] == 200
        assert get(port, "/", {"Authorization": f"Bearer {token}", "Host": "attacker.example"})[0] == 400
        assert get(port, "/login")[0] == 200 and get(port, "/static/musiclime.css")[0] == 200
        status, headers, _ = get(port, "/login", {"Content-Type": "application/x-www-form-urlencoded"}, "POST",
                                 urlencode({"token": token}).encode())
        assert status == 303 and "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        assert get(port, "/track/tagged-0", {"Cookie": cookie})[0] == 200
        assert get(port, "/login", {"Content-Type": "application/x-www-form-urlencoded"}, "POST", b"token=nope")[0] == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert token not in err
    # on loopback no token is asked, but the Host check stands (a DNS-rebinding page)
    proc, port, _ = start_server(str(served), str(tmp_path / "ix"))
    try:
        assert get(port, "/")[0] == 200 and get(port, "/", {"Host": f"localhost:{port}"})[0] == 200
        assert get(port, "/", {"Host": f"rebind.attacker.example:{port}"})[0] == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_provided_stems_are_heard_from_the_nights_catalogue_row_while_its_content_key_holds(server, served):
    """A night that read provided stems (the demo's) records no audio file: its audio comes
    from the catalogue row the night recorded, and stops when that row's files change."""
    _, port, _ = server
    status, _, page = get(port, "/track/changing-2?run=n2")
    assert status == 200 and "the files of the night&#39;s catalogue row" in page
    status, _, top = get(port, "/audio/top/changing-2?run=n2")
    assert status == 200 and top[:4] == b"RIFF"
    with touched(served.parent / "changing-vocals.flac", -10**9):  # what was explained is gone
        status, _, body = get(port, "/audio/original/changing-2?run=n2")
        assert status == 409 and "content key differs" in body
    assert get(port, "/audio/original/changing-2?run=n2")[0] == 200


def test_a_delta_output_on_the_s3_test_server(s3, tmp_path):
    out = "s3://lib/serve-delta"
    write_synthetic(out, 300, n_nights=2, changed=0.2, failed=0.02, fmt="delta", writers=True)
    proc, port, _ = start_server(out, str(tmp_path / "ix"))
    try:
        status, _, page = get(port, "/?" + urlencode({"q": "trk-0000042"}))
        assert status == 200 and 'href="/track/trk-0000042?run=night-1"' in page
        status, _, page = get(port, "/track/trk-0000042")
        assert status == 200 and page.count('class="cell"') == 40 and "rendered from" not in page
        assert "recorded neither an audio file nor a catalogue" in page  # synthetic: nothing to play
        assert get(port, "/?error=any")[0] == 200
        _, _, page = get(port, "/?run=night-2&status=ok")
        again = page.split('href="/track/')[1].split("?")[0]  # a track explained on both nights
        _, _, page = get(port, f"/track/{again}")
        history = page.split('id="history"')[1]
        assert ">night-1<" in history and ">night-2<" in history and "top-5 here gains" in history
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert s3["AWS_SECRET_ACCESS_KEY"] not in err


def test_twenty_clients_at_once_get_no_errors(tmp_path):
    """The load test of bench/bench_serve.py, bounded (3,000 tracks, 6 s); the 1M-track
    figures are in bench/results/serve.json."""
    write_synthetic(tmp_path / "out", 3000, n_nights=3)
    proc, port, _ = start_server(str(tmp_path / "out"), str(tmp_path / "ix"))
    try:
        r = load_test("127.0.0.1", port, lambda rng: request_mix(3000, ["night-1", "night-2", "night-3"], rng),
                      clients=20, seconds=6, think=1.0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"20 clients, 6 s: {r['requests']} requests, p95 {r['p95_ms']} ms, {r['throughput_rps']} req/s")
    assert r["errors"] == 0, r["error_examples"]
    assert r["requests"] >= 20 * 3
