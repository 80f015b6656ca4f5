"""A folder as a catalogue, tags, embedded and synced lyrics (issue: real libraries)."""

from __future__ import annotations

import os
import unicodedata

import numpy as np
import pytest

from musiclime.lyrics_sources import find_lyrics
from musiclime.synced import decode_text, parse_lrc
from musiclime.tags import MAX_TAG_CHARS, read_tags
from pipeline.catalogue import CatalogueReader, content_keys
from tests.real_library import encode, lrc, tag

SR = 16000


def tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def ids(root) -> tuple[list[str], CatalogueReader]:
    r = CatalogueReader(str(root))
    return [row["track_id"] for row in r.rows()], r


def test_folder_rules_ids_hidden_links_and_skips(tmp_path):
    root = tmp_path / "lib"
    a = root / "Artist" / "Album"
    a.mkdir(parents=True)
    for name in ("01 One.m4a", "02 Two.opus", "03 Three.wma", "04 Four.webm", "05 Five.mka", "Song.flac", "Song.mp3"):
        (a / name).write_bytes(b"x")  # the scan never opens a file: contents do not matter here
    (a / "cover.jpg").write_bytes(b"x")
    (a / "notes.pdf").write_bytes(b"x")
    (a / "._01 One.m4a").write_bytes(b"x")
    (a / ".hidden.mp3").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "x.mp3").write_bytes(b"x")
    os.symlink("..", a / "up")  # a loop
    os.symlink(a / "Song.flac", root / "Link.flac")  # the same file twice
    got, r = ids(root)
    assert got == [
        "Link",
        "Artist/Album/01 One",
        "Artist/Album/02 Two",
        "Artist/Album/03 Three",
        "Artist/Album/04 Four",
        "Artist/Album/05 Five",
        "Artist/Album/Song.mp3",
    ]  # Song.flac was met as Link.flac
    assert r.skipped.as_dict() == {
        ".jpg": 1,
        ".pdf": 1,
        "appledouble": 1,
        "hidden": 2,
        "link to a file already listed": 1,
        "link to a folder already listed": 1,
    }
    assert r.skipped.describe().startswith("skipped 7 files: 2 hidden, 1 .jpg")
    assert got == ids(root)[0]  # the same rows every pass


def test_ids_unique_before_keep_their_bytes_and_sidecars_match_across_normal_forms(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    nfd, nfc = unicodedata.normalize("NFD", "Beyoncé"), unicodedata.normalize("NFC", "Beyoncé")
    assert nfd != nfc
    (root / f"{nfd}.flac").write_bytes(b"x")
    (root / f"{nfc}.txt").write_text("sidecar")
    (root / f"{nfc}.mp3").write_bytes(b"x")  # another file (another name, byte-wise)
    (root / "plain.wav").write_bytes(b"x")
    (root / "plain.lrc").write_text("[00:01.00]hi")
    rows = {r["track_id"]: r for r in CatalogueReader(str(root)).rows()}
    assert set(rows) == {nfd, nfc, "plain"}  # stored bytes, as before the upgrade
    assert rows[nfd]["lyrics_path"].endswith(f"{nfc}.txt") and rows[nfc]["lyrics_path"].endswith(f"{nfc}.txt")
    assert rows["plain"]["lrc_path"].endswith("plain.lrc") and rows["plain"]["lyrics_path"] is None


def test_tags_are_read_cleaned_and_capped(tmp_path):
    from mutagen import id3

    mp3 = encode(tmp_path / "t.mp3", tone(), SR, "mp3")
    f = id3.ID3()
    f.add(id3.TIT2(encoding=3, text="Title\x1b[31m <script>x</script>"))
    f.add(id3.TPE1(encoding=3, text=["First", "Second"]))
    f.add(id3.TCON(encoding=3, text="(17)"))
    f.add(id3.TALB(encoding=3, text="A" * (MAX_TAG_CHARS + 50)))
    f.add(id3.USLT(encoding=3, lang="deu", desc="", text="deutsch"))
    f.add(id3.USLT(encoding=3, lang="eng", desc="x", text="english described"))
    f.add(id3.USLT(encoding=3, lang="eng", desc="", text="english\nplain"))
    f.add(id3.UFID(owner="http://musicbrainz.org", data=b"b1a9c0e9-d987-4042-ae91-78d6a3267d69"))
    f.save(mp3)
    t = read_tags(str(mp3))
    assert t.title == "Title [31m <script>x</script>"  # control characters out; escaping is the report's
    assert t.artist == "First" and t.genre == "Rock" and len(t.album) == MAX_TAG_CHARS
    assert t.flags == ["tag_truncated"] and t.lyrics == "english\nplain"
    assert t.musicbrainz_recording_id.startswith("b1a9c0e9") and 0.9 < t.duration_s < 1.2
    for kind, suffix in (("aac", ".m4a"), ("flac", ".flac"), ("opus", ".opus"), ("vorbis", ".ogg")):
        p = encode(tmp_path / f"x{suffix}", tone(), SR, kind)
        tag(p, "T", "Ar", "Al", genre="jazz", lyrics="la la")
        t = read_tags(str(p))
        assert (t.title, t.artist, t.album, t.genre, t.lyrics) == ("T", "Ar", "Al", "jazz", "la la"), kind
    assert read_tags(str(tmp_path / "t.mp3")).synced is None
    (tmp_path / "junk.mp3").write_bytes(os.urandom(3000))
    assert read_tags(str(tmp_path / "junk.mp3")).title is None  # never raises


def test_lrc_offsets_repeats_word_times_and_encodings():
    text = "[ar:x]\n[offset:+500]\n[00:10.00][00:40.00]chorus line\n[00:20.50]<00:20.50>one <00:21.00>two\n"
    s = parse_lrc(text)
    times = {w.word: [] for w in s.words}
    for w in s.words:
        times[w.word].append(w.time_s)
    assert times["chorus"] == [9.5, 39.5]  # +500 ms: shown half a second sooner; both timestamps
    assert times["one"] == [20.0] and times["two"] == [20.5]  # enhanced word times
    inside, sung = s.within(15.0, 25.0)
    assert inside == "one two" and sung == {"one": [5.0], "two": [5.5]}
    assert parse_lrc("no timestamps here") is None
    assert decode_text("caf\xe9".encode("cp1252")) == ("café", True)
    assert decode_text("\ufeffcafé".encode()) == ("café", False)
    assert decode_text("café".encode("utf-16")) == ("café", True)


def test_lyrics_precedence_column_lrc_txt_tags(tmp_path):
    p = encode(tmp_path / "s.flac", tone(), SR, "flac")
    tag(p, "T", "A", "B", lyrics="from tags")
    (tmp_path / "s.txt").write_text("from txt")
    (tmp_path / "s.lrc").write_text(lrc("from lrc", 1.0))
    from musiclime.stages import _TagReader

    row = dict(
        audio_path=str(p), lyrics="from column", lrc_path=str(tmp_path / "s.lrc"), lyrics_path=str(tmp_path / "s.txt")
    )
    order = []
    for drop in (None, "lyrics", "lrc_path", "lyrics_path"):
        row.pop(drop, None)
        found = find_lyrics(row, _TagReader(str(p)))
        order.append((found.source, found.text))
    assert order == [("catalogue", "from column"), ("lrc", "from lrc"), ("text_file", "from txt"), ("tag", "from tags")]


def test_content_keys_follow_the_decoder_for_lossy_files_only(tmp_path, monkeypatch):
    from musiclime import audio_io

    rows = [
        dict(track_id=n, audio_path=str(encode(tmp_path / f"{n}.{ext}", tone(), SR, kind)))
        for n, ext, kind in (("a", "flac", "flac"), ("b", "mp3", "mp3"), ("c", "wav", "wav"))
    ]
    before = content_keys([dict(r) for r in rows])
    monkeypatch.setattr(audio_io, "decoder_version", lambda: "pyav 99 / libavcodec 99")
    after = content_keys([dict(r) for r in rows])
    assert [x == y for x, y in zip(before, after)] == [True, False, True]


@pytest.mark.parametrize("window", ["on", "off"])
def test_synced_lyrics_are_cut_to_the_explained_window(tmp_path, window):
    """Planted 'fire' is sung inside the middle window, decoys outside it: with the window on
    only the inside words are features, and the planted one carries the weight."""
    from musiclime import MusicLIME
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.stages import DecodeSpec, decode
    from tests.toys import PlantedModel

    sr = 8000
    x = np.random.default_rng(0).normal(0, 0.05, 40 * sr).astype(np.float32)
    path = encode(tmp_path / "song.wav", x, sr, "wav")
    (tmp_path / "song.lrc").write_text(
        "[00:02.00]decoy early words\n[00:18.00]the fire burns\n"
        "[00:21.00]and we run\n[00:23.00]\n[00:35.00]decoy late words\n"
    )
    row = dict(track_id="song", catalogue_row=0, audio_path=str(path), lrc_path=str(tmp_path / "song.lrc"))
    inp = decode(row, DecodeSpec(separator="none", max_seconds=10.0, lyrics_window=window), sr)
    assert inp.about.window_start_s == 15.0 and inp.about.lyrics_source == "lrc"
    words = set(inp.lyrics.split())
    if window == "off":
        assert {"decoy", "early", "late", "fire"} <= words and inp.about.word_times is None
        return
    assert words == {"the", "fire", "burns", "and", "we", "run"} and "lyrics_windowed" in inp.flags
    assert inp.about.word_times["fire"] == [4.0]  # the line at 18 s, its words spread to the next at 21 s
    af = AudioFactorization(inp.stems, sr, n_segments=10, stem_names=inp.stem_names)
    exp = MusicLIME(num_samples=300, seed=0).explain(PlantedModel(), af, LyricsFactorization(inp.lyrics), labels=[1])
    lyric = [(name, w) for modality, name, w in exp.as_list(1) if modality == "lyrics"]
    assert lyric[0][0] == "fire" and lyric[0][1] > 0.05, lyric[:3]


def test_the_scanned_catalogue_gives_the_folders_rows(tmp_path):
    """``musiclime library scan``'s Parquet lists the rows the folder gives, with the tags;
    each decodes to the same input (a text-only run reads the same lyrics, label and all)."""
    from musiclime.stages import DecodeSpec, decode
    from pipeline.folder import write_catalogue

    root = tmp_path / "lib"
    for i, kind in enumerate(("aac", "mp3", "flac")):
        p = encode(root / "A" / f"{i:02d} S{i}{'.m4a' if kind == 'aac' else '.' + kind}", tone(2.0), SR, kind)
        tag(p, f"S{i}", "A", "Al", genre=["rock", "jazz", "folk"][i], lyrics=f"words of song {i}" if i else None)
    (root / "A" / "00 S0.lrc").write_text(lrc("la la land", 2.0))
    (root / "A" / "cover.png").write_bytes(b"x")
    n, skipped = write_catalogue(str(root), str(tmp_path / "cat.parquet"))
    assert n == 3 and skipped.as_dict() == {".png": 1}
    folder, table = CatalogueReader(str(root)), CatalogueReader(str(tmp_path / "cat.parquet"))
    a, b = list(folder.rows()), list(table.rows())
    keys = ("track_id", "catalogue_row", "audio_path", "lyrics_path", "lrc_path")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    assert [r["genre"] for r in b] == ["rock", "jazz", "folk"] and b[0]["title"] == "S0"
    spec = DecodeSpec(separator="none", label_column="genre", max_seconds=1.0)
    for x, y in zip(a, b):
        dx, dy = decode(x, spec, SR), decode(y, spec, SR)
        assert (dx.lyrics, dx.true_label, dx.about.lyrics_source, dx.flags) == (
            dy.lyrics,
            dy.true_label,
            dy.about.lyrics_source,
            dy.flags,
        )
        assert np.array_equal(dx.stems, dy.stems)


def test_a_resume_across_a_decoder_upgrade_lists_both_decoders(tmp_path, monkeypatch):
    """No silent mix: run.json lists every decoder a run's invocations used (each track's
    codec is in tracks.decoder); an incremental night re-explains lossy files (above)."""
    import json

    from musiclime import audio_io
    from pipeline.config import ExplainConfig
    from pipeline.run_record import RunRecord

    cfg = ExplainConfig(catalogue=str(tmp_path), out=str(tmp_path / "out"), run_id="r")
    RunRecord(str(tmp_path / "out"), "r", cfg, "inv1", "parquet").write("interrupted", 3)
    monkeypatch.setattr(audio_io, "decoder_version", lambda: "pyav 99 / libavcodec 99.1")
    RunRecord(str(tmp_path / "out"), "r", cfg, "inv2", "parquet").write("finished", 3)
    doc = json.loads((tmp_path / "out" / "run.json").read_text())
    assert doc["decoder"] == "pyav 99 / libavcodec 99.1" and len(doc["decoders"]) == 2
    assert doc["decoders"][0].startswith("pyav ") and doc["invocations"] == ["inv1", "inv2"]


def test_a_text_model_reads_the_tag_block_and_never_decodes_the_audio(tmp_path):
    """Lyrics embedded in an MP3's ID3 block: a text classifier's decode takes them from the
    tags, and audio frames that could not be decoded are no error (never read)."""
    from mutagen import id3

    from musiclime.stages import DecodeSpec, decode

    p = encode(tmp_path / "t.mp3", tone(2.0), SR, "mp3")
    tags = id3.ID3()
    tags.add(id3.USLT(encoding=3, lang="eng", desc="", text="sung from the tag"))
    tags.save(p)
    raw = p.read_bytes()
    head = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(raw[6:10]))  # the ID3 block (a syncsafe size)
    p.write_bytes(raw[:head] + os.urandom(len(raw) - head))  # the audio frames are garbage now
    row = dict(track_id="t", catalogue_row=0, audio_path=str(p))
    got = decode(row, DecodeSpec(audio_used=False), SR)
    assert got.lyrics == "sung from the tag" and got.about.lyrics_source == "tag"
    assert "audio_not_used" in got.flags and got.about.decoder is None


def test_the_report_puts_each_word_under_the_segments_it_is_sung_in():
    import polars as pl

    from pipeline.figures import sung_under_segments

    e = pl.DataFrame(
        {"token": ["fire", "night", None], "sung_at_s": [[0.5, 7.2], [3.9], None]},
        schema={"token": pl.String, "sung_at_s": pl.List(pl.Float64)},
    )
    html = sung_under_segments(e, 10.0, 10)
    cells = html.split("</tr><tr>")[1].split("</td>")
    assert cells[0] == "<td>fire" and cells[3] == "<td>night" and cells[7] == "<td>fire"
    assert sung_under_segments(e.head(0), 10.0, 10) == ""
    assert "&lt;b&gt;" in sung_under_segments(pl.DataFrame({"token": ["<b>"], "sung_at_s": [[1.0]]}), 10.0, 10)


def test_a_catalogues_title_artist_and_album_stand_before_the_files_tags(tmp_path):
    """What `tracks` records (and musiclime serve searches): the catalogue's columns where it
    has them, else the tags; the file is decoded, where it was and which version recorded."""
    from musiclime.stages import DecodeSpec, decode
    from musiclime.storage import version_key

    x = np.random.default_rng(1).normal(0, 0.1, 3 * SR).astype(np.float32)
    path = encode(tmp_path / "song.flac", x, SR, "flac")
    tag(path, "Tag Title", "Tag Artist", "Tag Album")
    spec = DecodeSpec(separator="none", max_seconds=3.0)
    row = dict(track_id="s", catalogue_row=0, audio_path=str(path), lyrics="la la")
    got = decode(dict(row, title="Curated\x00Title", artist="", album=None), spec, SR)
    assert (got.about.title, got.about.artist, got.about.album) == ("Curated Title", "Tag Artist", "Tag Album")
    assert got.about.audio_path == str(path) and got.about.audio_key == version_key(str(path))
    long = decode(dict(row, album="x" * (MAX_TAG_CHARS + 5)), spec, SR)
    assert long.about.album == "x" * MAX_TAG_CHARS and "tag_truncated" in long.flags
