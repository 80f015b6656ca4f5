"""Tiny random-init AST and RoBERTa saved with save_pretrained: the same loading code path
a user with real weights takes, with no download."""
from __future__ import annotations

from pathlib import Path

TEXTS = ["the fire burns and we run through the night", "love and rain in the city light",
         "dance until the morning comes", "neon pulse and a digital wave"] * 5


def tiny_ast(directory: Path, layers: int = 1) -> Path:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel
    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
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


LABELS = ["calm", "fierce", "odd"]


def tiny_ast_classifier(directory: Path, multi_label: bool = False) -> Path:
    """An ASTForAudioClassification (2.56 s window) with id2label, as save_pretrained writes it."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    torch.manual_seed(0)
    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    num_mel_bins=64, max_length=256, num_labels=len(LABELS),
                    id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
                    problem_type="multi_label_classification" if multi_label else "single_label_classification")
    ASTForAudioClassification(cfg).save_pretrained(directory)
    ASTFeatureExtractor(num_mel_bins=64, max_length=256).save_pretrained(directory)
    return directory


def tiny_text_classifier(directory: Path) -> Path:
    """A RobertaForSequenceClassification with its tokenizer, as save_pretrained writes it."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast
    tiny_roberta(directory)
    tok = RobertaTokenizerFast.from_pretrained(str(directory))
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=140, pad_token_id=tok.pad_token_id,
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={n: i for i, n in enumerate(LABELS)})
    for f in directory.glob("model.safetensors"):
        f.unlink()
    (directory / "config.json").unlink()
    RobertaForSequenceClassification(cfg).save_pretrained(directory)
    return directory


def as_hub_cache(folder: Path, hf_home: Path, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567",
                 ref: str = "main") -> Path:
    """``folder`` laid out as the Hugging Face cache holds a downloaded ``repo`` at
    ``commit`` (``refs/<ref>`` naming it), under ``hf_home``/hub."""
    import shutil
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    shutil.copytree(folder, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap
