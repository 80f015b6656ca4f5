"""Tiny random-init AST and RoBERTa saved with save_pretrained: the same loading code path
a user with real weights takes, with no download."""
from __future__ import annotations

from pathlib import Path

TEXTS = ["the fire burns and we run through the night", "love and rain in the city light",
         "dance until the morning comes", "neon pulse and a digital wave"] * 5


def tiny_ast(directory: Path) -> Path:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel
    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    num_mel_bins=64, max_length=256)
    ASTModel(cfg).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=64, max_length=256).save_pretrained(directory)
    return directory


def tiny_roberta(directory: Path) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast
    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    # transformers 5 takes vocab= / merges= (4.x took vocab_file= / merges_file=)
    tok = RobertaTokenizerFast(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tok.save_pretrained(directory)
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=140, pad_token_id=tok.pad_token_id)
    RobertaModel(cfg).save_pretrained(directory)
    return directory
