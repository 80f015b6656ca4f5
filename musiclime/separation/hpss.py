"""Pure-DSP separation: no weights, so the explainer runs on any machine.

Median-filtering HPSS on an STFT (Fitzgerald 2010) in torch, then:
- bass   = everything below a soft low-pass crossover (~120-250 Hz);
- drums  = the percussive part above it;
- vocals = the harmonic part above it that fluctuates within the singing band
  (relative to a long time median, which keeps what is sustained);
- other  = the rest of the harmonic part.
The four soft masks sum to one at every bin, so the stems sum back to the mix up to
the STFT round trip.
"""
from __future__ import annotations

import torch

from musiclime.separation.base import Separator, as_channels


def median_filter(x: torch.Tensor, kernel: int, dim: int) -> torch.Tensor:
    """Median over a centred window of ``kernel`` (odd) along ``dim``, edges replicated."""
    pad = kernel // 2
    x = x.movedim(dim, -1)
    padded = torch.nn.functional.pad(x[None], (pad, pad), mode="replicate")[0]
    out = padded.unfold(-1, kernel, 1).median(dim=-1).values
    return out.movedim(-1, dim)


class HPSSSeparator(Separator):
    """Args:
        n_fft, hop: STFT size and hop in samples.
        harmonic_kernel, percussive_kernel: median lengths in frames and in bins.
        bass_hz: (start, end) of the low-pass crossover in Hz.
        vocal_band_hz: band where the vocal estimate lives.
        sustain_kernel: frames of the long time median separating sustained (other) from
            fluctuating (vocals) harmonic energy.
    """
    name = "hpss"
    version = 1

    def __init__(self, n_fft: int = 1024, hop: int = 256, harmonic_kernel: int = 17, percussive_kernel: int = 17,
                 bass_hz: tuple[float, float] = (120.0, 250.0), vocal_band_hz: tuple[float, float] = (200.0, 4000.0),
                 sustain_kernel: int = 61, power: float = 2.0):
        self.n_fft, self.hop = n_fft, hop
        self.harmonic_kernel, self.percussive_kernel = harmonic_kernel | 1, percussive_kernel | 1
        self.bass_hz, self.vocal_band_hz = tuple(bass_hz), tuple(vocal_band_hz)
        self.sustain_kernel, self.power = sustain_kernel | 1, power

    def cache_params(self) -> dict:
        return {**super().cache_params(), "version": self.version, "n_fft": self.n_fft, "hop": self.hop,
                "kernels": [self.harmonic_kernel, self.percussive_kernel, self.sustain_kernel],
                "bass_hz": list(self.bass_hz), "vocal_band_hz": list(self.vocal_band_hz), "power": self.power}

    def masks(self, mag: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Soft masks ``[4, F, frames]`` (vocals, drums, bass, other) that sum to 1."""
        eps = 1e-10
        F = mag.shape[0]
        freqs = torch.linspace(0, sample_rate / 2, F, device=mag.device)
        lo, hi = self.bass_hz
        low = ((hi - freqs) / (hi - lo)).clamp(0, 1)[:, None]                      # 1 below lo, 0 above hi
        h = median_filter(mag, self.harmonic_kernel, dim=1) ** self.power
        p = median_filter(mag, self.percussive_kernel, dim=0) ** self.power
        harm = h / (h + p + eps)
        rest = mag * (1 - low) * harm
        sustained = median_filter(rest, self.sustain_kernel, dim=1) ** self.power
        fluct = (rest ** self.power - sustained).clamp(min=0)
        a, b = self.vocal_band_hz
        band = ((freqs >= a) & (freqs <= b)).float()[:, None]
        voc = band * fluct / (fluct + sustained + eps)
        vocals = (1 - low) * harm * voc
        other = (1 - low) * harm * (1 - voc)
        drums = (1 - low) * (1 - harm)
        return torch.stack([vocals, drums, low.expand_as(mag), other])

    def separate(self, audio, sample_rate: int) -> torch.Tensor:
        x = as_channels(audio).mean(0)                                            # mono [T]
        T = x.shape[0]
        window = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x, self.n_fft, self.hop, window=window, return_complex=True)   # [F, frames]
        m = self.masks(spec.abs(), sample_rate)
        stems = torch.istft(spec[None] * m, self.n_fft, self.hop, window=window, length=T)
        return stems.to(torch.float32)
