"""What a reader hears of an explained track: its explained window and the composition of
its top positive stem-segments, rebuilt from its audio file (``report.html`` embeds them,
``musiclime serve`` streams them on request).

Nothing here writes: the mix is decoded without separation; hpss stems come from the stem
cache or are separated in memory, demucs stems only from the stem cache (the job's own,
under whichever precision it separated).
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass, replace

import numpy as np


@dataclass
class Heard:
    """float32 mono arrays at ``sample_rate``: the explained window and the composition of
    its ``top`` stem-segments; ``lyrics`` as decoded (for a report made without them)."""
    full: np.ndarray
    composed: np.ndarray
    sample_rate: int
    top: list[tuple[str, int]]
    lyrics: str | None


def encode(audio: np.ndarray, sr: int, fmt: str = "OGG", max_sr: int = 16000) -> bytes:
    """``audio`` (float [T]) resampled to at most ``max_sr``, normalised to a peak of 0.9, as
    Ogg Vorbis (small: the report inlines it) or 16-bit WAV (``fmt="WAV"``: a browser reads
    its exact duration from the header, where it estimates an Ogg's from its bitrate)."""
    import soundfile as sf

    from musiclime.audio_io import resample
    a = np.asarray(audio, np.float32)
    if sr > max_sr:
        a, sr = resample(a, sr, max_sr), max_sr
    a = a / max(1e-6, float(np.abs(a).max())) * 0.9
    buf = io.BytesIO()
    if fmt == "WAV":
        sf.write(buf, a, sr, format="WAV", subtype="PCM_16")
    else:
        sf.write(buf, a, sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def ogg(audio: np.ndarray, sr: int, max_sr: int = 16000) -> bytes:
    return encode(audio, sr, "OGG", max_sr)


def top_positive(e, max_n: int = 5) -> list[tuple[str, int]]:
    """The clearly positive stem-segments of a track's explanation rows (polars): at most
    ``max_n``, each at least a tenth of the largest weight."""
    pos = e.filter((e["modality"] == "audio") & (e["weight"] > 0)).sort("weight", descending=True)
    top = pos.filter(pos["weight"] >= 0.1 * (pos["weight"].max() or 0)).head(max_n)
    return [(s, int(g)) for s, g in top.select("stem", "segment").iter_rows()]


@functools.lru_cache(maxsize=2)
def _demucs(model_name: str, repo: str | None, allow_pickle: bool):
    from musiclime.separation import get_separator
    return get_separator("demucs", model_name=model_name, repo=repo, allow_pickle=allow_pickle, device="cpu")


class _Keyed:
    """A separator's cache identity under another precision (the cache key reads nothing else)."""

    def __init__(self, params: dict):
        self.params = params

    def cache_params(self) -> dict:
        return self.params


def cached_demucs_stems(cfg, mix: np.ndarray, sr: int) -> np.ndarray | None:
    """The stems the job stored for this mix (float32 [4, T]), or None when not cached."""
    import torch

    from musiclime.separation import StemCache
    sep = _demucs(cfg.demucs_model, cfg.demucs_repo, cfg.trust_pickle)
    cache = StemCache(cfg.stem_cache, readonly=True)
    fp32 = {k: v for k, v in sep.cache_params().items() if k != "precision"}
    audio = torch.from_numpy(mix)
    for params in (fp32, {**fp32, "precision": "bf16"}):  # a GPU stage may have separated under bf16
        stems = cache.load(cache.key(audio, sr, _Keyed(params)), len(mix), sep.stem_names)  # type: ignore[arg-type]
        if stems is not None:
            return stems.numpy()
    return None


def _hpss_stems(cfg, mix: np.ndarray, sr: int) -> np.ndarray:
    import torch

    from musiclime.separation import StemCache
    from musiclime.separation.hpss import HPSSSeparator
    sep = HPSSSeparator()
    if cfg.stem_cache:
        cache = StemCache(cfg.stem_cache, readonly=True)
        stems = cache.load(cache.key(torch.from_numpy(mix), sr, sep), len(mix), sep.stem_names)
        if stems is not None:
            return stems.numpy()
    return sep.separate(torch.from_numpy(mix), sr).numpy()


def heard(manifest: dict, row: dict, e, n_seg: int) -> Heard | str:
    """The explained window of ``row``'s audio and its top positive stem-segments' mix, or
    why they cannot be heard.

    manifest: the run's ``runs/<run>.json`` (its config); row: a catalogue row (track_id,
    catalogue_row, audio_path, or the run's catalogue row for provided stems); e: the
    track's explanation rows of one label (polars)."""
    from musiclime.factorization import STEM_NAMES, AudioFactorization
    from musiclime.records import ErrorRecord
    from musiclime.stages import decode
    from pipeline.config import ExplainConfig
    if not manifest.get("config"):
        return "the run recorded no configuration to decode its audio with"
    cfg = ExplainConfig(**{k: v for k, v in manifest["config"].items() if k in ExplainConfig.__dataclass_fields__})
    sr = int(manifest.get("sample_rate") or 16000)
    # provided stems are read as the job read them; the others decode the mix alone
    inp = decode(row, (cfg if cfg.separator == "provided" else replace(cfg, separator="none")).decode_spec(), sr)
    if isinstance(inp, ErrorRecord) or inp.stems is None:
        return "the audio cannot be decoded now" + (f": {inp.message}" if isinstance(inp, ErrorRecord) else "")
    mix = inp.stems[0]
    names: tuple[str, ...] = STEM_NAMES
    if cfg.separator == "provided":
        stems, names = inp.stems, inp.stem_names
    elif cfg.separator == "demucs":
        stems = cached_demucs_stems(cfg, mix, sr)
        if stems is None:
            return f"the demucs stems of this track are not in the stem cache ({cfg.stem_cache})"
    elif cfg.separator == "hpss":
        stems = _hpss_stems(cfg, mix, sr)
    else:
        stems, names = mix[None], ("mix",)
    try:
        af = AudioFactorization(stems, sr, n_seg, names)
    except ValueError as err:
        return f"the audio cannot be cut into {n_seg} segments: {err}"
    top = [(s, g) for s, g in top_positive(e) if s in af.stem_names]
    mask = np.zeros((1, af.n_features), np.uint8)
    for s, g in top:
        mask[0, g * af.n_stems + af.stem_names.index(s)] = 1
    return Heard(af.full()[0].cpu().numpy(), af.compose(mask)[0].cpu().numpy(), sr, top, inp.lyrics)
