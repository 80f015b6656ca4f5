"""Audio files as users have them, made here with PyAV's own encoders (and soundfile for
Vorbis: PyAV's wheel has no libvorbis), tagged with mutagen. Nothing binary is committed."""

from __future__ import annotations

import os
import shutil
import unicodedata
from pathlib import Path

import numpy as np

# name -> (codec, container format or None, sample rate, channels, bit rate)
FORMATS = {
    "aac": ("aac", None, 44100, 2, 128000),
    "alac": ("alac", None, 44100, 2, None),
    "mp3": ("libmp3lame", None, 44100, 2, 128000),
    "mp3vbr": ("libmp3lame", None, 32000, 1, None),
    "flac": ("flac", None, 48000, 1, None),
    "opus": ("libopus", None, 48000, 2, 96000),
    "wav": ("pcm_s16le", None, 22050, 1, None),
    "aiff": ("pcm_s16be", "aiff", 44100, 2, None),
    "adts": ("aac", "adts", 44100, 2, 128000),
}
SUFFIX = {
    "aac": ".m4a",
    "alac": ".m4a",
    "mp3": ".mp3",
    "mp3vbr": ".mp3",
    "flac": ".flac",
    "opus": ".opus",
    "wav": ".wav",
    "aiff": ".aiff",
    "adts": ".aac",
    "vorbis": ".ogg",
}


def resampled(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    from musiclime.audio_io import resample

    return resample(x, sr, rate) if sr != rate else x


def encode(path: str | Path, x: np.ndarray, sr: int, kind: str, options: dict | None = None) -> Path:
    """Write mono ``x`` (float, at ``sr``) as ``kind`` (a :data:`FORMATS` key or ``vorbis``);
    ``options`` go to the encoder (``{"aac_pns": "0"}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "vorbis":
        import soundfile as sf

        y = np.stack([x, x]).T
        # in blocks: libsndfile 1.2 crashes writing minutes of Vorbis in one call
        with sf.SoundFile(path, "w", sr, 2, format="OGG", subtype="VORBIS") as f:
            for i in range(0, len(y), sr):
                f.write(y[i : i + sr])
        return path
    import av

    codec, fmt, rate, channels, bit_rate = FORMATS[kind]
    y = resampled(x.astype(np.float32), sr, rate)
    y = np.stack([y * (1.0 - 0.1 * c) for c in range(channels)]).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=rate, options=options or {})
        s.layout = "mono" if channels == 1 else "stereo"
        if bit_rate:
            s.bit_rate = bit_rate
        elif kind == "mp3vbr":  # lame -V 4: a VBR file with a Xing/LAME header
            s.codec_context.qscale = 4
        fmt0 = s.codec_context.codec.audio_formats[0].name
        n = s.codec_context.frame_size or 4096
        for i in range(0, y.shape[1], n):
            chunk = y[:, i : i + n]
            arr = chunk if fmt0.endswith("p") else chunk.T.reshape(1, -1)
            if fmt0.startswith("s16"):
                arr = np.clip(arr * 32767, -32768, 32767).astype(np.int16)
            elif fmt0.startswith("s32"):
                arr = np.clip(arr * 2147483647.0, -2147483648, 2147483647).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=fmt0, layout=s.layout.name)
            frame.sample_rate, frame.pts = rate, i
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


def tag(
    path: Path,
    title: str,
    artist: str,
    album: str,
    genre: str | None = None,
    lyrics: str | None = None,
    sylt: list[tuple[str, int]] | None = None,
) -> None:
    """Write the usual tags the way each format keeps them."""
    import mutagen

    suffix = path.suffix.lower()
    if suffix in (".mp3", ".aac", ".wav", ".aiff"):
        from mutagen import id3

        f = mutagen.File(path)
        if f.tags is None:
            f.add_tags()
        t = f.tags
        t.add(id3.TIT2(encoding=3, text=title))
        t.add(id3.TPE1(encoding=3, text=artist))
        t.add(id3.TALB(encoding=3, text=album))
        if genre:
            t.add(id3.TCON(encoding=3, text=genre))
        if lyrics:
            t.add(id3.USLT(encoding=3, lang="eng", desc="", text=lyrics))
        if sylt:
            t.add(id3.SYLT(encoding=3, lang="eng", format=2, type=1, text=sylt))
        f.save()
        return
    f = mutagen.File(path)
    if suffix == ".m4a":
        f["\xa9nam"], f["\xa9ART"], f["\xa9alb"] = [title], [artist], [album]
        if genre:
            f["\xa9gen"] = [genre]
        if lyrics:
            f["\xa9lyr"] = [lyrics]
    else:  # Vorbis comments: FLAC, Ogg Vorbis, Opus
        f["title"], f["artist"], f["album"] = title, artist, album
        if genre:
            f["genre"] = genre
        if lyrics:
            f["lyrics"] = lyrics
    f.save()


def lrc(lyrics: str, seconds: float, offset_ms: int = 0) -> str:
    """An LRC text of ``lyrics`` with its lines spread over ``seconds``."""
    lines = [ln for ln in lyrics.splitlines() if ln.strip()]
    step = seconds / max(len(lines), 1)
    out = [f"[offset:{offset_ms}]"] if offset_ms else []
    for i, ln in enumerate(lines):
        t = i * step + offset_ms / 1000.0
        out.append(f"[{int(t // 60):02d}:{t % 60:05.2f}]{ln}")
    return "\n".join(out) + "\n"


def protect(src: Path, dst: Path) -> Path:
    """A copy of an ``.m4a`` made to look FairPlay-protected: its sample entry becomes ``drms``."""
    dst.write_bytes(src.read_bytes().replace(b"mp4a", b"drms"))
    return dst


def video_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def build_library(root: Path, demo: Path, rows: list[dict], sr: int) -> dict[str, dict]:
    """A user's library from demo tracks: ``Artist/Album/NN Title.ext`` in every common
    format, tagged (genre = the demo label), lyrics embedded, in an ``.lrc`` or a ``.txt``;
    plus the files a real library also has. Returns the expected outcome per track id:
    ``{"demo": demo track id, "kind": format}`` or ``{"error": error_type}``."""
    import soundfile as sf

    kinds = ["aac", "alac", "mp3", "flac", "vorbis", "opus", "wav", "mp3vbr"]
    expect: dict[str, dict] = {}
    for i, r in enumerate(rows):
        kind = kinds[i % len(kinds)]
        x, file_sr = sf.read(demo / r["audio_path"], dtype="float32")
        assert file_sr == sr
        artist, album = f"Artist {i % 3}", f"Album {i % 2}"
        title = f"Song {i:02d}"
        stem = root / artist / album / f"{i + 1:02d} {title}"
        path = encode(stem.with_suffix(SUFFIX[kind]), x, sr, kind)
        lyrics = r["lyrics"]
        how = i % 3
        tag(path, title, artist, album, genre=r["genre"], lyrics=lyrics if how == 0 else None)
        if how == 1:
            stem.with_suffix(".lrc").write_text(lrc(lyrics, len(x) / sr), encoding="utf-8")
        elif how == 2:
            stem.with_suffix(".txt").write_text(lyrics, encoding="utf-8")
        tid = str(path.relative_to(root).with_suffix(""))
        expect[tid] = {"demo": r["track_id"], "kind": kind, "lyrics": ["tag", "lrc", "text_file"][how]}
    first = root / "Artist 0" / "Album 0"
    (first / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (first / "._01 Song 00.m4a").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (first / ".DS_Store").write_bytes(b"\x00" * 16)
    extra = root / "Extras"
    extra.mkdir()
    aac = next(root / f"{t}.m4a" for t, e in expect.items() if e.get("kind") == "aac")
    protect(aac, extra / "Protected.m4a")
    expect["Extras/Protected"] = {"error": "encrypted"}
    video_only(extra / "Clip.mp4")
    expect["Extras/Clip"] = {"error": "no_audio_stream"}
    whole = next(p for p in root.rglob("*.flac")).read_bytes()
    (extra / "Broken.flac").write_bytes(whole[: len(whole) // 2])
    expect["Extras/Broken"] = {"truncated": True}
    # the same title in two formats: both explained, each id keeps its extension
    x, _ = sf.read(demo / rows[0]["audio_path"], dtype="float32")
    encode(extra / "Twice.flac", x, sr, "flac")
    encode(extra / "Twice.mp3", x, sr, "mp3")
    expect["Extras/Twice.flac"] = {"demo": rows[0]["track_id"], "kind": "flac"}
    expect["Extras/Twice.mp3"] = {"demo": rows[0]["track_id"], "kind": "mp3"}
    nfd = unicodedata.normalize("NFD", "Café")
    encode(extra / f"{nfd}.flac", x, sr, "flac")
    (extra / (unicodedata.normalize("NFC", "Café") + ".txt")).write_text("sidecar in nfc", encoding="utf-8")
    expect[f"Extras/{nfd}"] = {"demo": rows[0]["track_id"], "kind": "flac", "lyrics": "text_file"}
    # an album as one FLAC and a cue sheet: explained as one track, the sheet counted
    shutil.copy(extra / "Twice.flac", extra / "Album.flac")
    (extra / "Album.cue").write_text('FILE "Album.flac" WAVE\n  TRACK 01 AUDIO\n    INDEX 01 00:00:00\n')
    expect["Extras/Album"] = {"demo": rows[0]["track_id"], "kind": "flac"}
    os.symlink("..", extra / "loop")  # a link loop: each real file once
    return expect
