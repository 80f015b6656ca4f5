"""A library of real scores rendered part by part: real instrument and voice sounds whose
stems are known exactly (for checking explanations of real pretrained taggers).

Scores come from ``music21``'s corpus; each part is written as its own MIDI file with a
General MIDI program and rendered by FluidSynth (Debian's ``fluidsynth`` and
``fluid-soundfont-gm``), so a track's stems are the rendered parts, summed per stem:

- ``choir``: Bach chorales (four voice parts, "Choir Aahs") and Monteverdi madrigals (five
  voices, "Voice Oohs"): all in ``vocals``;
- ``strings``: string quartets (Haydn, Mozart, Beethoven): violins and viola in ``other``,
  cello in ``bass``;
- ``+drums``: every fourth track of each kind also gets a General MIDI drum part (kick,
  snare, hats on channel 10) in ``drums``.

``make_score_library`` writes a catalogue with ``provided`` stems (``*_path`` columns), the
``kind`` and ``piece`` of each track and the stems that carry each kind's sound
(``voice_stems`` / ``string_stems``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
CHOIR_AAHS, VOICE_OOHS, VIOLIN, VIOLA, CELLO = 52, 53, 40, 41, 42  # General MIDI programs, from 0
STRING_PROGRAMS = (VIOLIN, VIOLIN, VIOLA, CELLO)
STEMS = ("vocals", "drums", "bass", "other")
QUARTET_FOLDERS = ("haydn", "mozart", "beethoven")  # their string quartets in the corpus (not k545: a sonata)


class RenderUnavailable(RuntimeError):
    """FluidSynth, a General MIDI soundfont or music21 is missing."""


def soundfont() -> str:
    for p in (os.environ.get("MUSICLIME_SOUNDFONT", ""), *SOUNDFONTS):
        if p and Path(p).is_file():
            return p
    raise RenderUnavailable(
        "no General MIDI soundfont: apt-get install fluid-soundfont-gm (or set MUSICLIME_SOUNDFONT)"
    )


def fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderUnavailable("no fluidsynth on PATH: apt-get install fluidsynth")
    return exe


def pieces(kind: str, n: int) -> list[str]:
    """The first ``n`` corpus files of a kind (``choir`` alternates chorales and madrigals,
    ``strings`` cycles through the quartets' movements)."""
    import music21

    root = Path(music21.__file__).parent / "corpus"
    if kind == "strings":
        movements = [sorted(str(p) for p in (root / c).rglob("*.mxl") if "k545" not in str(p)) for c in QUARTET_FOLDERS]
        out = [x for group in zip(*movements) for x in group]
    else:
        chorales = sorted(str(p) for p in (root / "bach").glob("bwv*.mxl"))
        madrigals = sorted(str(p) for p in (root / "monteverdi").glob("*.mxl"))
        out = [x for pair in zip(chorales, madrigals) for x in pair]
    return out[:n]


def _programmed(part, program: int, channel: int | None = None):
    from music21 import instrument

    for inst in list(part.recurse().getElementsByClass(instrument.Instrument)):
        inst.activeSite.remove(inst)
    inst = instrument.Instrument()
    inst.midiProgram = program
    if channel is not None:
        inst.midiChannel = channel
    part.insert(0, inst)
    return part


def drum_part(seconds: float, bpm: float = 120.0):
    """A rock beat (kick 1 and 3, snare 2 and 4, eighth-note hats) on the GM drum channel."""
    from music21 import chord, instrument, note, stream, tempo

    part = stream.Part()
    part.insert(0, tempo.MetronomeMark(number=bpm))
    inst = instrument.UnpitchedPercussion()
    inst.midiChannel = 9
    part.insert(0, inst)
    for i in range(int(seconds * bpm / 60.0 * 2) + 2):  # eighths
        pitches = [42] + ([36] if i % 4 == 0 else []) + ([38] if i % 4 == 2 else [])
        c = chord.Chord([note.Note(p) for p in pitches], quarterLength=0.5)
        c.volume.velocity = 90
        part.append(c)
    return part


def excerpt(part, seconds: float):
    """The part's notes and marks that start in its first ``seconds`` (at its first tempo,
    else 120 bpm): a whole movement is never rendered (and some of the corpus's parts make
    FluidSynth render without end)."""
    from music21 import stream, tempo

    flat = part.flatten()
    marks = flat.getElementsByClass(tempo.MetronomeMark)
    bpm = marks[0].getQuarterBPM() if marks and marks[0].number else 120.0
    limit = seconds * bpm / 60.0
    cut = stream.Part()
    for el in flat.getElementsByOffset(0, limit, includeEndBoundary=False, mustBeginInSpan=True):
        cut.insert(el.offset, el)
    return cut


def render(part, seconds: float, sample_rate: int, workdir: Path, timeout: float = 120.0) -> np.ndarray:
    """One part through FluidSynth: mono float32 of exactly ``seconds`` (zero padded).

    FluidSynth writes raw 16-bit stereo and is stopped once it has written ``seconds``: a
    part whose MIDI never ends (some of the corpus's do) costs no more than one that does."""
    import time

    mid, raw = workdir / "part.mid", workdir / "part.raw"
    excerpt(part, seconds).write("midi", fp=str(mid))
    raw.unlink(missing_ok=True)
    n = int(round(seconds * sample_rate))
    need = n * 2 * 2  # stereo s16
    cmd = [
        fluidsynth(),
        "-ni",
        "-q",
        "-R",
        "0",
        "-C",
        "0",
        "-g",
        "0.5",
        "-r",
        str(sample_rate),
        "-T",
        "raw",
        "-O",
        "s16",
        "-F",
        str(raw),
        soundfont(),
        str(mid),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if raw.exists() and raw.stat().st_size >= need:
            break
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RenderUnavailable(f"fluidsynth wrote less than {seconds} s of {mid.name} in {timeout:.0f} s")
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    pcm = np.fromfile(raw, dtype="<i2")[: (need // 2) // 2 * 2].reshape(-1, 2)
    x = pcm.astype(np.float32).mean(1) / 32768.0
    return np.pad(x[:n], (0, max(0, n - len(x))))


def render_piece(path: str, kind: str, seconds: float, sample_rate: int, drums: bool) -> dict[str, np.ndarray]:
    """A piece's stems ``{stem: [n]}`` (the parts summed per stem), its first ``seconds``."""
    from music21 import converter

    score = converter.parse(path)
    stems = {s: np.zeros(int(round(seconds * sample_rate)), np.float32) for s in STEMS}
    with tempfile.TemporaryDirectory() as tmp:
        for i, part in enumerate(getattr(score, "parts", [score])):
            if kind == "choir":
                stem, program = "vocals", CHOIR_AAHS if "bach" in path else VOICE_OOHS
            else:
                program = STRING_PROGRAMS[min(i, 3)]
                stem = "bass" if program == CELLO else "other"
            stems[stem] += render(_programmed(part, program), seconds, sample_rate, Path(tmp))
        if drums:
            stems["drums"] += render(drum_part(seconds), seconds, sample_rate, Path(tmp))
    return stems


def make_score_library(out: str | Path, tracks: int = 40, seconds: float = 15.0, sample_rate: int = 16000) -> Path:
    """Render ``tracks`` excerpts (half choir, half strings) into ``out``; the catalogue's
    path. A library rendered with the same arguments is reused."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    root = Path(out)
    params = dict(tracks=tracks, seconds=seconds, sample_rate=sample_rate, version=1)
    meta = root / "scores.json"
    if meta.is_file() and json.loads(meta.read_text()) == params and (root / "catalogue.parquet").is_file():
        return root / "catalogue.parquet"
    fluidsynth(), soundfont()
    half = (tracks + 1) // 2
    todo = [("choir", p) for p in pieces("choir", half)] + [("strings", p) for p in pieces("strings", tracks - half)]
    rows = []
    for i, (kind, path) in enumerate(todo):
        drums = i % 4 == 3
        stems = render_piece(path, kind, seconds, sample_rate, drums)
        peak = float(np.abs(sum(stems.values())).max())
        tid = f"{kind}-{i:03d}"
        tdir = root / "stems" / tid
        tdir.mkdir(parents=True, exist_ok=True)
        row: dict = dict(track_id=tid, kind=kind + ("+drums" if drums else ""), piece=path.split("corpus/")[-1])
        stored = []
        for name in STEMS:
            p = tdir / f"{name}.flac"
            sf.write(p, stems[name] * (0.8 / max(peak, 1e-6)), sample_rate, subtype="PCM_16")
            stored.append(sf.read(p, dtype="float32")[0])  # the mix is the sum of the stems as stored
            row[f"{name}_path"] = str(p.relative_to(root))
        mix = root / "audio" / f"{tid}.flac"
        mix.parent.mkdir(parents=True, exist_ok=True)
        sf.write(mix, np.clip(np.sum(stored, axis=0), -1, 1), sample_rate, subtype="PCM_24")
        row.update(
            audio_path=str(mix.relative_to(root)),
            lyrics="",
            duration_s=seconds,
            voice_stems="vocals" if kind == "choir" else "",
            string_stems="other,bass" if kind == "strings" else "",
        )
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), root / "catalogue.parquet")
    meta.write_text(json.dumps(params))
    return root / "catalogue.parquet"
