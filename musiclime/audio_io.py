"""Decoding audio: soundfile to read, torchaudio to resample; flags say what was changed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from musiclime.errors import InputError


def read_audio(path: str | Path, sample_rate: int, mono: bool = True,
               max_seconds: float | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode ``path`` to float32 at ``sample_rate`` Hz.

    Returns ``(audio, flags)``: audio ``[n_samples]`` (mono) or ``[channels, n_samples]``;
    flags among ``resampled``, ``downmixed``, ``cropped`` (the middle ``max_seconds``).

    Raises:
        InputError: ``missing_file``, ``decode_error``, ``empty_audio``.
    """
    import soundfile as sf

    from musiclime import storage
    p = Path(str(path).split("?")[0])  # for messages: the file's name
    if not file_exists(path):
        raise InputError("missing_file", f"no audio file at {path}")
    flags: list[str] = []
    try:
        # Only the explained window is decoded: a 6-minute file with max_seconds=30 costs
        # the window's memory, not the file's (a remote file is fetched whole first).
        with sf.SoundFile(storage.readable(path)) as f:
            sr, frames = f.samplerate, f.frames
            start, stop = 0, frames
            if max_seconds is not None and frames > int(max_seconds * sr):
                keep = int(max_seconds * sr)
                start = (frames - keep) // 2
                stop = start + keep
                flags.append("cropped")
            if start:
                f.seek(start)
            data = f.read(stop - start, dtype="float32", always_2d=True)  # [n, channels]
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise InputError("decode_error", f"cannot decode {p.name}: {e}") from None
    if data.shape[0] == 0:
        raise InputError("empty_audio", f"{p.name} has zero samples")
    audio = data.T  # [channels, n]
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
        flags.append("downmixed")
    if sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
        flags.append("resampled")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    return (audio[0] if mono else audio), flags


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
