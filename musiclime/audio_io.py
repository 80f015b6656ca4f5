"""Decoding audio: PyAV (FFmpeg) to read any format, windowed (:mod:`musiclime.av_decode`),
torchaudio to resample once to the model's rate; flags say what was changed."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from musiclime.errors import InputError


@lru_cache(maxsize=1)
def decoder_version() -> str:
    """The decoder that made a run's samples (``run.json`` records it): lossy formats'
    samples change slightly between decoders, lossless ones never."""
    import av
    return f"pyav {av.__version__} / libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}"


def read_window(path: str | Path, sample_rate: int, mono: bool = True, max_seconds: float | None = None):
    """Decode the middle ``max_seconds`` of ``path`` (a path or URI) to float32 at
    ``sample_rate`` Hz: a :class:`musiclime.av_decode.Decoded` whose ``audio`` is ``[n]``
    (mono) or ``[channels, n]``; flags among ``resampled``, ``downmixed``, ``cropped``,
    ``truncated``. A remote file is read by ranges: about the window's bytes.

    Raises:
        InputError: ``missing_file``, ``unreadable_file``, ``decode_error``, ``encrypted``,
            ``no_audio_stream``, ``empty_audio``.
    """
    from musiclime import storage
    from musiclime.av_decode import decode_window
    p = Path(str(path).split("?")[0])  # for messages: the file's name
    if not file_exists(path):
        raise InputError("missing_file", f"no audio file at {path}")
    source = storage.readable(path)
    try:
        d = decode_window(source, max_seconds, p.name)
    except InputError:
        raise
    except Exception as e:  # anything a decoder raises is this file's error row, never a crash
        raise InputError("decode_error", f"cannot decode {p.name}: {type(e).__name__}: {e}") from None
    finally:
        if not isinstance(source, str):
            source.close()
    if d.audio.shape[1] == 0:
        raise InputError("empty_audio", f"{p.name} has zero samples")
    audio = d.audio
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
        d.flags.append("downmixed")
    if d.sample_rate != sample_rate:
        audio = resample(audio, d.sample_rate, sample_rate)
        d.flags.append("resampled")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    d.audio, d.sample_rate = (audio[0] if mono else audio), sample_rate
    return d


def read_audio(path: str | Path, sample_rate: int, mono: bool = True,
               max_seconds: float | None = None) -> tuple[np.ndarray, list[str]]:
    """:func:`read_window`'s ``(audio, flags)``."""
    d = read_window(path, sample_rate, mono, max_seconds)
    return d.audio, d.flags


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """``[..., n]`` at ``orig_sr`` -> ``[..., n']`` at ``new_sr`` (torchaudio's sinc resampler)."""
    if orig_sr == new_sr:
        return audio
    import torch
    import torchaudio.functional as AF
    return AF.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_sr, new_sr).numpy()


def resample_tensor(audio, orig_sr: int, new_sr: int):
    """:func:`resample` for a torch tensor, on its own device (the same sinc resampler)."""
    if orig_sr == new_sr:
        return audio
    import torchaudio.functional as AF
    return AF.resample(audio.contiguous(), orig_sr, new_sr)


def file_exists(path) -> bool:
    """Whether a file is at ``path`` (a path or URI).

    Raises:
        InputError: ``unreadable_file`` when the place cannot be asked (a bad URI, no
            access to the bucket): the message names the location and the storage error.
    """
    from musiclime import storage
    try:
        return storage.is_file(path)
    except Exception as e:
        raise InputError("unreadable_file", f"cannot read {path}: {str(e).splitlines()[0][:300]}") from None


def read_lyrics_file(path: str | Path) -> str:
    """A UTF-8 lyrics file; anything else is an ``InputError`` (``lyrics_decode_error``)."""
    from musiclime import storage
    p = Path(str(path).split("?")[0])
    if not file_exists(path):
        raise InputError("missing_file", f"no lyrics file at {path}")
    try:
        return storage.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError("lyrics_decode_error", f"{p.name} is not UTF-8: {e}") from None
