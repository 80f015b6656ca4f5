"""Hugging Face classifiers as musiclime models: an audio classifier explained on audio
alone, a text classifier on lyrics alone.

Both load from a folder in ``save_pretrained`` layout (a hub snapshot is one too): the
config, the safetensors weights and the feature-extractor or tokenizer files, nothing
else (``use_safetensors=True``; ``trust_remote_code`` is never passed, so only the model
classes transformers ships can be built). Class names come from ``id2label``; a
multi-label model (``problem_type`` ``multi_label_classification``, e.g. an AudioSet
tagger) gives independent sigmoid scores per class, others a softmax.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

AUDIO, TEXT = "hf-audio-classifier", "hf-text-classifier"


class NoSafetensorsError(ValueError):
    """A model folder without safetensors weights (pickle-only weights are never loaded)."""


def require_safetensors(folder: str | Path) -> None:
    d = Path(folder)
    if not any(d.glob("*.safetensors")):
        others = sorted(p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))
        raise NoSafetensorsError(
            f"{d} has no .safetensors weights" + (f" (only {', '.join(others)}, which would need unpickling or "
                                                   f"another framework)" if others else "")
            + "; musiclime loads safetensors only: convert them (e.g. `model.save_pretrained(dir, "
              "safe_serialization=True)` in a trusted environment)")


def folder_kind(folder: str | Path) -> str | None:
    """``hf-audio-classifier`` / ``hf-text-classifier`` from a folder's ``config.json``
    (its ``architectures``, else its model type), or None."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    archs = config.get("architectures") or []
    if any(a.endswith("ForAudioClassification") for a in archs):
        return AUDIO
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return TEXT
    return None


def _labels(config) -> list[str]:
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]


def _scores(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    logits = logits.float()
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)


class HFAudioClassifier:
    """``AutoModelForAudioClassification`` (AST, wav2vec2, HuBERT, ...).

    ``predict_proba(audio float32 [B, n_samples] at sample_rate, lyrics ignored) -> [B, C]``.
    An AST-style extractor's filterbank runs on the model's device for the whole batch;
    other extractors run per batch on the CPU. ``max_seconds`` is what the model sees (AST:
    ``max_length`` frames of 10 ms), None when it takes any length.
    """

    modality = "audio"

    def __init__(self, folder: str | Path, device: str | torch.device | None = None):
        from transformers import ASTFeatureExtractor, AutoFeatureExtractor, AutoModelForAudioClassification
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # batch jobs log lines, not bars
        require_safetensors(folder)
        self.folder = str(folder)
        self.model = AutoModelForAudioClassification.from_pretrained(self.folder, local_files_only=True,
                                                                     use_safetensors=True).eval()
        self.extractor = AutoFeatureExtractor.from_pretrained(self.folder, local_files_only=True)
        self.classes = _labels(self.model.config)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.fbank = None
        self.max_seconds = None
        if isinstance(self.extractor, ASTFeatureExtractor):
            from musiclime.models.features import KaldiFbank
            self.fbank = KaldiFbank.from_extractor(self.extractor)
            self.max_seconds = self.extractor.max_length * 0.010
        self.window_seconds = self.max_seconds  # the model protocol's name (see musiclime.protocol)
        if device is not None:
            self.to(device)

    def to(self, device) -> HFAudioClassifier:
        self.model.to(device)
        if self.fbank is not None:
            self.fbank.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict_proba(self, audio: torch.Tensor, lyrics=None) -> torch.Tensor:
        audio = torch.as_tensor(audio, dtype=torch.float32)
        with torch.inference_mode():
            if self.fbank is not None:
                logits = self.model(input_values=self.fbank(audio.to(self.device))).logits
            else:
                feats = self.extractor(list(audio.detach().cpu().numpy()), sampling_rate=self.sample_rate,
                                       return_tensors="pt", padding=True)
                logits = self.model(**{k: v.to(self.device) for k, v in feats.items()}).logits
            return _scores(logits, self.multi_label)


class HFTextClassifier:
    """``AutoModelForSequenceClassification`` on the lyrics.

    ``predict_proba(audio ignored, lyrics: B strings) -> [B, C]``; lyrics longer than the
    model's maximum are truncated by its tokenizer.
    """

    modality = "lyrics"
    sample_rate = 16000  # audio is never looked at; decode still needs a rate
    max_seconds = None

    def __init__(self, folder: str | Path, device: str | torch.device | None = None, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        require_safetensors(folder)
        self.folder = str(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.folder, local_files_only=True,
                                                                        use_safetensors=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.classes = _labels(self.model.config)
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        limit = getattr(self.tokenizer, "model_max_length", max_length) or max_length
        self.max_length = int(min(max_length, limit))
        if device is not None:
            self.model.to(device)

    def to(self, device) -> HFTextClassifier:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def predict_proba(self, audio=None, lyrics: list[str] | None = None) -> torch.Tensor:
        texts = [t if t.strip() else " " for t in (lyrics or [])]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            return _scores(logits, self.multi_label)
