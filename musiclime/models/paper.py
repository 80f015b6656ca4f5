"""The paper's architecture: AST audio encoder + RoBERTa lyrics encoder, late fusion.

Each encoder comes from a folder in ``save_pretrained`` layout or from the Hugging Face hub
(``hf:ORG/NAME[@REVISION]``, pinned to its commit; offline from the HF cache). Frozen, an
encoder is referenced by the checkpoint (with a hash of its weights); fine-tuned (all of
it, or its last ``unfreeze`` layers), it is stored in the checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from musiclime.models.audio import ASTEncoder
from musiclime.models.fusion import LateFusionClassifier
from musiclime.models.lyrics import TransformerLyricsEncoder


def paper_model(ast_path: str | Path, roberta_path: str | Path, classes: list[str], modality: str = "both",
                trainable: bool = True, max_length: int = 128, hidden: int = 128,
                unfreeze_audio: int = 0, unfreeze_text: int = 0) -> LateFusionClassifier:
    """``trainable`` fine-tunes both encoders whole; with it False, ``unfreeze_audio`` /
    ``unfreeze_text`` train only that many last layers of each (0: frozen). The head trains."""
    audio = ASTEncoder(ast_path, trainable=trainable, unfreeze=unfreeze_audio)
    lyrics = TransformerLyricsEncoder(roberta_path, max_length=max_length, trainable=trainable, normalize=False,
                                      unfreeze=unfreeze_text)
    return LateFusionClassifier(audio, lyrics, classes, audio.sample_rate, modality, hidden=hidden)
