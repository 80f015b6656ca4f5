"""What the explainer needs from a model.

Any object with ``classes``, ``sample_rate`` and ``predict_proba`` can be explained. A
late-fusion model that also exposes its two encoders and its head lets the explainer run
each encoder once per distinct half-mask; one that exposes ``embed_lyrics_masks`` builds
perturbed token ids from one tokenization of the full lyrics.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from musiclime.errors import ModelOutputError

if TYPE_CHECKING:
    pass


@runtime_checkable
class MusicModel(Protocol):
    """A multimodal classifier.

    ``predict_proba(audio: float32 Tensor [B, n_samples] at sample_rate Hz,
    lyrics: list[str] of length B) -> probabilities [B, len(classes)]`` (numpy or torch).

    Optional: ``window_seconds``, the audio length the model hears at once (a clip model:
    AST 10.24 s). The decoded window is cut to it; ``--window whole`` averages the model's
    probabilities over consecutive windows of it. Absent or None: any length.
    """
    classes: list[str]
    sample_rate: int

    def predict_proba(self, audio: torch.Tensor, lyrics: list[str]) -> Any: ...


@runtime_checkable
class LateFusionModel(MusicModel, Protocol):
    """``head(embed_audio(audio [B, T]) [B, Da], embed_lyrics(lyrics) [B, Dt]) -> [B, C]``."""

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor: ...

    def embed_lyrics(self, lyrics: list[str]) -> torch.Tensor: ...

    def head(self, audio_emb: torch.Tensor, lyrics_emb: torch.Tensor) -> Any: ...


def is_late_fusion(model: object) -> bool:
    return all(callable(getattr(model, n, None)) for n in ("embed_audio", "embed_lyrics", "head"))


def has_mask_lyrics(model: object) -> bool:
    """The model embeds lyrics straight from word masks (``embed_lyrics_masks(lf, masks)``)."""
    return callable(getattr(model, "embed_lyrics_masks", None))


def model_device(model: object) -> torch.device | None:
    """The device a model wants its inputs on, if it says."""
    dev = getattr(model, "device", None)
    return torch.device(dev) if isinstance(dev, (str, torch.device)) else None


def check_model(model: Any) -> None:
    """Raise ``TypeError`` naming what is missing for the model protocol."""
    missing = [n for n in ("classes", "sample_rate") if not hasattr(model, n)]
    if not callable(getattr(model, "predict_proba", None)) and not is_late_fusion(model):
        missing.append("predict_proba")
    if missing:
        raise TypeError(f"{type(model).__name__} does not follow the model protocol: missing "
                        f"{', '.join(missing)}")
    if len(model.classes) < 1:
        raise TypeError("model.classes is empty")


def as_probs(out: Any, rows: int, n_classes: int) -> np.ndarray:
    """Model output as ``float64 [rows, n_classes]``; wrong shapes or NaN/inf raise."""
    if isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.shape != (rows, n_classes):
        raise ModelOutputError(f"model returned shape {arr.shape}, expected ({rows}, {n_classes})")
    if not np.isfinite(arr).all():
        raise ModelOutputError("model returned NaN or inf probabilities")
    return arr


def as_embedding(out: Any, rows: int, what: str) -> torch.Tensor:
    """Encoder output as a 2-D tensor with ``rows`` rows."""
    t = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != rows:
        raise ModelOutputError(f"{what} returned shape {tuple(t.shape)}, expected ({rows}, D)")
    return t
