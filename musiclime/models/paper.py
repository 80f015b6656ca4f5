"""The paper's architecture: AST audio encoder + RoBERTa lyrics encoder, late fusion.

Both encoders load from local directories in ``save_pretrained`` layout (a user with
fine-tuned or downloaded weights points at them); nothing is fetched from a hub.
"""
from __future__ import annotations

from pathlib import Path

from musiclime.models.audio import ASTEncoder
from musiclime.models.fusion import LateFusionClassifier
from musiclime.models.lyrics import TransformerLyricsEncoder


def paper_model(ast_path: str | Path, roberta_path: str | Path, classes: list[str], modality: str = "both",
                trainable: bool = True, max_length: int = 128, hidden: int = 128) -> LateFusionClassifier:
    audio = ASTEncoder(ast_path, trainable=trainable)
    lyrics = TransformerLyricsEncoder(roberta_path, max_length=max_length, trainable=trainable, normalize=False)
    return LateFusionClassifier(audio, lyrics, classes, audio.sample_rate, modality, hidden=hidden)
