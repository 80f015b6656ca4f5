"""Tiny deterministic models and inputs shared by the tests (no mocks: real objects that
follow the model protocol, whose true dependence on the features is known)."""
from __future__ import annotations

import re

import numpy as np
import torch

SR = 8000
STEMS = ("vocals", "drums", "bass", "other")
LYRICS = "The fire burns and we run through the night, the night is ours"


def planted_stems(seed: int = 0, seconds: int = 10, sr: int = SR, loud_stem: int = 1, loud_segment: int = 3):
    """Quiet noise; one stem is loud in one segment only."""
    rng = np.random.default_rng(seed)
    n = sr * seconds
    stems = rng.normal(0, 0.05, size=(4, n)).astype(np.float32)
    seg = n // 10
    stems[loud_stem] *= 0.1
    stems[loud_stem, loud_segment * seg:(loud_segment + 1) * seg] = rng.normal(0, 0.5, size=seg)
    return stems


def segment_energy(audio, segment: int = 3, n_segments: int = 10):
    audio = torch.as_tensor(audio, dtype=torch.float32)
    seg = audio.shape[1] // n_segments
    return audio[:, segment * seg:(segment + 1) * seg].pow(2).mean(dim=1)


def has_word(lyrics, word: str = "fire"):
    return torch.tensor([float(word in re.findall(r"\w+", s.lower())) for s in lyrics])


class PlantedModel:
    """p(fierce) depends only on the energy of segment 3 and on the word 'fire'."""
    classes = ["calm", "fierce"]
    sample_rate = SR

    def __init__(self):
        self.calls = 0
        self.rows = 0
        self.max_batch = 0

    def _probs(self, energy, fire):
        p = torch.sigmoid(4.0 * energy.double() / 0.25 + 3.0 * fire.double() - 3.5)
        return torch.stack([1 - p, p], dim=1)

    def predict_proba(self, audio, lyrics):
        self.calls += 1
        self.rows += len(lyrics)
        self.max_batch = max(self.max_batch, len(lyrics))
        return self._probs(segment_energy(audio), has_word(lyrics)).numpy()


class LateFusionPlanted(PlantedModel):
    """The same function as encoders + head, counting encoder rows."""

    def __init__(self):
        super().__init__()
        self.audio_rows = 0
        self.lyric_rows = 0

    def embed_audio(self, audio):
        self.audio_rows += len(audio)
        return segment_energy(audio)[:, None]

    def embed_lyrics(self, lyrics):
        self.lyric_rows += len(lyrics)
        return has_word(lyrics)[:, None]

    def head(self, a, t):
        return self._probs(torch.as_tensor(a)[:, 0], torch.as_tensor(t)[:, 0])

    def predict_proba(self, audio, lyrics):
        return self.head(self.embed_audio(audio), self.embed_lyrics(lyrics)).numpy()


class MaskLyricsPlanted(LateFusionPlanted):
    """Also embeds lyrics straight from word masks (the explainer should prefer this)."""

    def __init__(self):
        super().__init__()
        self.mask_rows = 0

    def embed_lyrics_masks(self, lf, masks):
        self.mask_rows += len(masks)
        names = lf.feature_names
        if "fire" not in names:
            return torch.zeros(len(masks), 1)
        return torch.as_tensor(np.asarray(masks)[:, names.index("fire")], dtype=torch.float32)[:, None]
