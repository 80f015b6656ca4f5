"""Audio features computed on the model's device, in batches.

:class:`KaldiFbank` is what ``ASTFeatureExtractor`` (and extractors built like it) computes
per waveform on the CPU with ``torchaudio.compliance.kaldi.fbank``: 25 ms Hann-windowed
frames every 10 ms, DC offset removed, pre-emphasis 0.97, power spectrum of a
power-of-two FFT, Kaldi mel banks (20 Hz to Nyquist), log; then padded or cut to
``max_length`` frames and normalised ``(x - mean) / (2 std)``. Here the whole batch goes
through a few tensor operations on the device, so the composed audio of thousands of masks
never returns to the host.
"""
from __future__ import annotations

import torch
from torch import nn


class KaldiFbank(nn.Module):
    """``forward(audio float32 [B, n_samples]) -> [B, max_length, num_mel_bins]``.

    Args mirror the extractor's config: ``sampling_rate``, ``num_mel_bins``, ``max_length``
    (frames), ``mean``, ``std``, ``do_normalize``.
    """

    compile_unit = True  # tensors only: --compile fuses it into the encoder's first kernels

    def __init__(self, sampling_rate: int = 16000, num_mel_bins: int = 128, max_length: int = 1024,
                 mean: float = -4.2677393, std: float = 4.5689974, do_normalize: bool = True):
        super().__init__()
        from torchaudio.compliance.kaldi import get_mel_banks
        self.sampling_rate, self.num_mel_bins, self.max_length = int(sampling_rate), int(num_mel_bins), int(max_length)
        self.mean, self.std, self.do_normalize = float(mean), float(std), bool(do_normalize)
        self.win = int(self.sampling_rate * 0.025)
        self.hop = int(self.sampling_rate * 0.010)
        self.n_fft = 1 << (self.win - 1).bit_length()
        banks, _ = get_mel_banks(self.num_mel_bins, self.n_fft, float(self.sampling_rate), 20.0, 0.0,
                                 100.0, -500.0, 1.0)
        banks = nn.functional.pad(banks.float(), (0, 1))                 # [mels, n_fft / 2 + 1]
        self.register_buffer("banks", banks.T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win, periodic=False), persistent=False)

    @classmethod
    def from_extractor(cls, extractor) -> KaldiFbank:
        return cls(extractor.sampling_rate, extractor.num_mel_bins, extractor.max_length,
                   getattr(extractor, "mean", -4.2677393), getattr(extractor, "std", 4.5689974),
                   getattr(extractor, "do_normalize", True))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # fp32 whatever the surrounding autocast: a bf16 mel product would move the features
        # by about 1e-2, and the transformer after it may still run in half precision
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return self._features(audio.float())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < self.win:  # shorter than one frame: the extractor gives no frames either
            x = nn.functional.pad(x, (0, self.win - x.shape[1]))
        frames = x.unfold(1, self.win, self.hop)                          # [B, F, win]
        frames = frames - frames.mean(-1, keepdim=True)
        prev = torch.cat([frames[..., :1], frames[..., :-1]], -1)
        frames = (frames - 0.97 * prev) * self.window
        power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)         # [B, F, n_fft / 2 + 1]
        mel = torch.log((power @ self.banks).clamp_min(torch.finfo(torch.float32).eps))
        n = mel.shape[1]
        if n < self.max_length:
            mel = nn.functional.pad(mel, (0, 0, 0, self.max_length - n))
        else:
            mel = mel[:, :self.max_length]
        if self.do_normalize:
            mel = (mel - self.mean) / (self.std * 2)
        return mel
