"""A clip model's track-level prediction (``--window whole``): the mean of its class
probabilities over consecutive windows of its input length, the way a track's label is
made from a clip model.

The track is cut into ``ceil(T / W)`` windows of ``W`` samples: consecutive from the start,
the last one ending at the track's end (it overlaps the one before it), so every window is
a full input and every sample is heard. A track no longer than ``W`` is one window: the
model's own prediction, unchanged. Windows of several masks go to the model together, at
most ``batch`` windows per call, so memory is the middle window's per call whatever the
track's length.

A late-fusion model keeps its shape: ``embed_audio`` returns the windows' embeddings side
by side (``[B, n x D]``), ``head`` averages the probabilities of each window with the lyrics
embedding; the text encoder still runs once per distinct lyric mask.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from musiclime.protocol import as_embedding, as_probs, is_late_fusion


def window_count(n_samples: int, window: int) -> int:
    """Windows of ``window`` samples that cover ``n_samples``."""
    return max(1, math.ceil(n_samples / window)) if window > 0 else 1


def windows_of(audio: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, T]`` -> ``[B, n, W]`` (views where possible; a track <= W is returned as ``[B, 1, T]``)."""
    b, t = audio.shape
    if t <= window:
        return audio[:, None, :]
    n = window_count(t, window)
    starts = [min(i * window, t - window) for i in range(n)]
    return torch.stack([audio[:, s : s + window] for s in starts], dim=1)


class WholeTrack:
    """``model`` heard over the whole track: see the module doc. ``window_s``: the model's
    input length in seconds; ``batch``: windows per model call."""

    def __init__(self, model: Any, window_s: float, batch: int = 8):
        self.model = model
        self.classes = list(model.classes)
        self.sample_rate = int(model.sample_rate)
        self.window = int(round(window_s * self.sample_rate))
        self.batch = max(1, int(batch))
        self.device = getattr(model, "device", None)
        if is_late_fusion(model):
            self.embed_audio, self.embed_lyrics, self.head = self._embed_audio, model.embed_lyrics, self._head
            if callable(getattr(model, "embed_lyrics_masks", None)):
                self.embed_lyrics_masks = model.embed_lyrics_masks

    def windows(self, n_samples: int) -> int:
        return window_count(n_samples, self.window)

    def _chunks(self, audio: torch.Tensor):
        """``(rows, windows [k, W])`` of at most ``batch`` windows, in row-major order, copied
        a chunk at a time (never the whole ``[B, n, W]``)."""
        b, t = audio.shape
        n = window_count(t, self.window)
        size = min(t, self.window)
        starts = [min(i * self.window, t - size) for i in range(n)]
        pairs = [(r, s) for r in range(b) for s in starts]
        for i in range(0, len(pairs), self.batch):
            part = pairs[i : i + self.batch]
            yield [r for r, _ in part], torch.stack([audio[r, s : s + size] for r, s in part])

    def predict_proba(self, audio: torch.Tensor, lyrics: list[str]) -> torch.Tensor:
        b, n = audio.shape[0], window_count(audio.shape[1], self.window)
        probs = [
            torch.as_tensor(
                as_probs(self.model.predict_proba(w, [lyrics[r] for r in rows]), len(rows), len(self.classes))
            )
            for rows, w in self._chunks(audio)
        ]
        return torch.cat(probs).reshape(b, n, -1).mean(dim=1)

    def _embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        b = audio.shape[0]
        emb = torch.cat(
            [as_embedding(self.model.embed_audio(w), len(rows), "embed_audio") for rows, w in self._chunks(audio)]
        )
        self._dim = int(emb.shape[1])  # per window: head() splits the rows back
        return emb.reshape(b, -1)  # [B, n x D]: one row per mask, as the runner caches it

    def _head(self, audio_emb: torch.Tensor, lyrics_emb: torch.Tensor) -> torch.Tensor:
        b, d = audio_emb.shape[0], self._dim
        n = audio_emb.shape[1] // d
        a = audio_emb.reshape(b * n, d)
        t = lyrics_emb.repeat_interleave(n, dim=0)
        p = torch.as_tensor(as_probs(self.model.head(a, t), b * n, len(self.classes)))
        return p.reshape(b, n, -1).mean(dim=1)
