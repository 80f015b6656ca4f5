"""Audio encoders: waveform ``[B, n_samples]`` -> embedding ``[B, D]``."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class LogMelCNN(nn.Module):
    """A small log-mel CNN, trainable on 2 CPU cores in minutes.

    ``forward(audio float32 [B, n_samples] at sample_rate Hz) -> [B, emb_dim]``.
    Time is pooled by mean and max so that evidence in one segment still shows.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 1024,
                 hop_length: int | None = None, channels: tuple[int, ...] = (16, 32, 64),
                 emb_dim: int = 64):
        super().__init__()
        import torchaudio
        self.config = dict(sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft,
                           hop_length=hop_length, channels=list(channels), emb_dim=emb_dim)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length or sample_rate // 50,
            n_mels=n_mels, power=2.0)
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * c_in, emb_dim)
        self.emb_dim = emb_dim

    def spec(self) -> dict:
        """How to rebuild this encoder (goes into a checkpoint's config.json)."""
        return {"type": "logmel_cnn", **self.config}

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = torch.log(self.mel(audio) + 1e-6)            # [B, n_mels, frames]
        x = (x + 6.0) / 6.0                               # roughly unit scale for log power
        x = self.convs(x.unsqueeze(1))                    # [B, C, mels', frames']
        x = x.mean(dim=2)                                 # over frequency
        x = torch.cat([x.mean(dim=2), x.amax(dim=2)], 1)  # over time
        return self.proj(x)


class ASTEncoder(nn.Module):
    """Audio Spectrogram Transformer from a local directory (``save_pretrained`` layout).

    ``forward(audio [B, n_samples] at 16 kHz) -> pooled [B, hidden_size]``. Weights load
    as safetensors only; nothing is downloaded (``local_files_only``). The filterbank
    features are computed on the model's device for the whole batch
    (:class:`~musiclime.models.features.KaldiFbank`, equal to the extractor's).
    """

    def __init__(self, path: str | Path, trainable: bool = True, unfreeze: int = 0, weights_sha256: str | None = None):
        super().__init__()
        from transformers import ASTFeatureExtractor, ASTModel

        from musiclime.models.pretrained import freeze, load_source
        folder, self.path, self.weights_sha256 = load_source(path, weights_sha256, trainable or unfreeze > 0)
        self.extractor = ASTFeatureExtractor.from_pretrained(folder, local_files_only=True)
        self.model = ASTModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        from musiclime.models.features import KaldiFbank
        self.fbank = KaldiFbank.from_extractor(self.extractor)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.emb_dim = int(self.model.config.hidden_size)
        self.window_seconds = self.extractor.max_length * 0.010  # frames the filterbank keeps, 10 ms each
        self.trainable, self.unfreeze = freeze(self.model, trainable, unfreeze, final=("layernorm",))

    def spec(self) -> dict:
        return {"type": "ast", "path": self.path, "trainable": self.trainable, "unfreeze": self.unfreeze,
                "weights_sha256": self.weights_sha256}

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        values = self.fbank.to(device)(audio.to(device))
        return self.model(input_values=values).pooler_output
