"""Models that follow the explainer's protocol, their checkpoints and their loading.

- :class:`LateFusionClassifier`: audio encoder + lyrics encoder + MLP head.
- Encoders: :class:`LogMelCNN` (offline default), :class:`ASTEncoder`,
  :class:`TransformerLyricsEncoder` (all-MiniLM-L6-v2 by default, or RoBERTa and any
  other local HF encoder), :class:`BagOfWordsEncoder` (light tests and benchmarks).
- :func:`load_model` resolves a ``--model`` spec.
"""
from musiclime.models.audio import ASTEncoder, LogMelCNN
from musiclime.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from musiclime.models.fusion import LateFusionClassifier
from musiclime.models.lyrics import BagOfWordsEncoder, TransformerLyricsEncoder
from musiclime.models.registry import load_model

__all__ = ["ASTEncoder", "BagOfWordsEncoder", "LateFusionClassifier", "LogMelCNN",
           "TransformerLyricsEncoder", "build_model", "load_checkpoint", "load_model",
           "save_checkpoint"]
