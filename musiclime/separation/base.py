"""The separator interface: mixture audio in, named mono stems out."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from musiclime.factorization import STEM_NAMES  # noqa: F401 (re-exported: the separators' stems)


def as_channels(audio) -> torch.Tensor:
    """``[T]`` or ``[channels, T]`` (numpy or torch) -> float32 ``[channels, T]``."""
    a = audio if isinstance(audio, torch.Tensor) else torch.from_numpy(np.asarray(audio, dtype=np.float32))
    a = a.to(torch.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"audio must be [T] or [channels, T], got {tuple(a.shape)}")
    return a


class Separator(ABC):
    """Splits a mixture into stems.

    ``separate(audio [channels, T], sample_rate) -> float32 Tensor [n_stems, T]``: mono
    stems at the input's sample rate and length, in the order of ``stem_names``.
    """
    name: str = "separator"
    stem_names: tuple[str, ...] = STEM_NAMES
    sample_rate: int | None = None  # the rate it works at internally (None: any)

    @abstractmethod
    def separate(self, audio, sample_rate: int) -> torch.Tensor: ...

    def cache_params(self) -> dict:
        """Everything that changes the output; part of the stem cache key."""
        return {"name": self.name, "stems": list(self.stem_names)}
