"""musicnn (Pons & Serra, 2019): the pretrained MagnaTagATune and Million Song Dataset taggers
of the ``musicnn`` package, re-implemented in PyTorch, weights read from the package's own
TensorFlow checkpoints (:mod:`musiclime.models.tf_checkpoint`; no TensorFlow, no librosa).

``--model musicnn:MTT`` / ``musicnn:MSD``. The front end is the original's, computed on the
model's device for the whole batch: 16 kHz audio, STFT 512 / hop 256 (centred, zero padded:
librosa 0.10's default), power spectrum, 96 mel bands (librosa's Slaney filters),
``log10(10000 x + 1)`` of the mel rounded to float16 as the original computes it, cut into non-overlapping
187-frame patches (3 s); the track's tag probabilities are the mean of the patches'
sigmoids, as ``musicnn.tagger.top_tags`` reports them. Audio shorter than one patch is
repeated to fill it (the training's ``repeat-pad``; the original tagger fails on it).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SR, N_FFT, HOP, N_MELS, PATCH = 16000, 512, 256, 96, 187
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default
DATASETS = {"MTT": "MTT_musicnn", "MSD": "MSD_musicnn"}
# musicnn/configuration.py, in the order of the models' outputs
# fmt: off
MTT_LABELS = ["guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
              "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
              "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
              "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
              "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral"]
MSD_LABELS = ["rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
              "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
              "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
              "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop",
              "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
              "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy"]
# fmt: on
LABELS = {"MTT": MTT_LABELS, "MSD": MSD_LABELS}


def checkpoint_prefix(dataset: str) -> str:
    """Where the installed ``musicnn`` wheel keeps a dataset's checkpoint (``PREFIX.index``)."""
    import importlib.util

    if dataset not in DATASETS:
        raise ValueError(f"musicnn:{dataset}: the datasets are {', '.join(DATASETS)}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the musicnn package (its checkpoints) is not installed: make venv installs it")
    return str(Path(next(iter(spec.submodule_search_locations))) / DATASETS[dataset]) + "/"


def slaney_mel_filters(sr: int = SR, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` float32: ``librosa.filters.mel``'s defaults (Slaney scale
    and area normalisation, 0 Hz to Nyquist), computed as librosa does, in float64."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2)
    hz = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fdiff, ramps = np.diff(hz), np.subtract.outer(hz, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)))
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (hz[2 : n_mels + 2] - hz[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _half(x: torch.Tensor) -> torch.Tensor:
    """Round to float16 and back: the original's ``astype(np.float16)`` arithmetic, on any device."""
    return x.to(torch.float16).to(torch.float32)


class MelFrontEnd(nn.Module):
    """``audio [B, n] -> log-mel [B, frames, 96]`` (frames = 1 + n // 256), the original's."""

    compile_unit = True  # tensors only (--compile)

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("mel", torch.from_numpy(slaney_mel_filters()), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # [B, 257, frames]
        mel = torch.einsum("bft,mf->btm", power, self.mel)
        # the original rounds the mel to float16, then numpy < 2 computes the log in float32
        # (value-based casting: ``10000 * float16`` is float32, so loud bands do not overflow)
        return torch.log10(_half(mel) * 10000 + 1)


def _bn(n: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(n, eps=BN_EPS)


class Musicnn(nn.Module):
    """The musicnn graph (``musicnn/models.py: build_musicnn``) on patches ``[P, 187, 96]``;
    returns logits ``[P, n_tags]``.

    Front end: two timbral convolutions (7 x 38 and 7 x 67 over time x mel, 204 filters each)
    and three temporal ones (128, 64, 32 frames x 1 band, 51 filters each), each ReLU, batch
    norm, max over frequency; mid end: three 7-frame convolutions of 64 filters with residual
    connections; back end: max and mean over time of the 753 stacked features, batch norm,
    dense 200 (ReLU, batch norm), dense to the tags. TensorFlow's NHWC with H = time."""

    compile_unit = True  # tensors only (--compile)

    def __init__(self, n_tags: int = 50, filt: float = 1.6, mid: int = 64, units: int = 200):
        super().__init__()
        timbral, temporal = int(filt * 128), int(filt * 32)
        self.bn_in = nn.BatchNorm2d(1, eps=BN_EPS)
        self.timbral = nn.ModuleList(nn.Conv2d(1, timbral, (7, int(f * N_MELS))) for f in (0.4, 0.7))
        self.timbral_bn = nn.ModuleList(_bn(timbral) for _ in range(2))
        self.temporal = nn.ModuleList(nn.Conv2d(1, temporal, (k, 1)) for k in (128, 64, 32))
        self.temporal_bn = nn.ModuleList(_bn(temporal) for _ in range(3))
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList(nn.Conv1d(front if i == 0 else mid, mid, 7, padding=3) for i in range(3))
        self.mid_bn = nn.ModuleList(_bn(mid) for _ in range(3))
        self.pool_bn = _bn(2 * (front + 3 * mid))
        self.dense = nn.Linear(2 * (front + 3 * mid), units)
        self.dense_bn = _bn(units)
        self.out = nn.Linear(units, n_tags)

    @staticmethod
    def _max_over_freq(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
        """``[P, C, T, W]`` -> ReLU -> batch norm per channel -> max over W -> ``[P, C, T]``,
        reduced first: ReLU is monotone and inference batch norm is ``a x + b`` per
        channel, so the max of the result is ``a relu(max x) + b`` where ``a >= 0`` and
        ``a relu(min x) + b`` where ``a < 0``; the full-size map is never normalised
        (a third of the CPU time otherwise)."""
        assert bn.running_var is not None and bn.running_mean is not None and not bn.training
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = bn.bias - bn.running_mean * a
        top = torch.where((a >= 0)[None, :, None], F.relu(x.amax(3)), F.relu(x.amin(3)))
        return top * a[None, :, None] + b[None, :, None]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.bn_in(logmel[:, None])  # [P, 1, T, 96]
        feats = [
            self._max_over_freq(conv(F.pad(x, (0, 0, 3, 3))), bn) for conv, bn in zip(self.timbral, self.timbral_bn)
        ]
        for conv, bn in zip(self.temporal, self.temporal_bn):
            k = conv.kernel_size[0]  # TensorFlow's "same": the odd one of k - 1 pads after
            feats.append(self._max_over_freq(conv(F.pad(x, (0, 0, (k - 1) // 2, k // 2))), bn))
        front = torch.cat(feats, 1)  # [P, 561, T]
        layers, h = [front], front
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn)):
            y = bn(F.relu(conv(h)))
            h = y if i == 0 else y + h
            layers.append(h)
        z = torch.cat(layers, 1)  # [P, 753, T]
        pooled = torch.stack([z.amax(2), z.mean(2)], 2).flatten(1)  # TF's [max, mean] per feature
        return self.out(self.dense_bn(F.relu(self.dense(self.pool_bn(pooled)))))


def weights_from_tf(tf: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The musicnn checkpoint's variables, named by creation order in the TF graph, as this
    module's ``state_dict`` (kernels from ``[kh, kw, in, out]`` to PyTorch's layouts)."""
    out: dict[str, torch.Tensor] = {}

    def bn(ours: str, i: int) -> None:
        name = "batch_normalization" + (f"_{i}" if i else "")
        for a, b in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"),
        ):
            out[f"{ours}.{a}"] = torch.from_numpy(tf[f"{name}/{b}"])
        out[f"{ours}.num_batches_tracked"] = torch.tensor(0)

    def conv(ours: str, i: int, one_d: bool = False) -> None:
        name = "conv2d" + (f"_{i}" if i else "")
        k = tf[f"{name}/kernel"]  # [kh, kw, in, out]
        w = k[:, :, 0, :].transpose(2, 1, 0) if one_d else k.transpose(3, 2, 0, 1)  # 1-D: the kw axis is in
        out[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        out[f"{ours}.bias"] = torch.from_numpy(tf[f"{name}/bias"])

    bn("bn_in", 0)
    for j in range(2):
        conv(f"timbral.{j}", j)
        bn(f"timbral_bn.{j}", 1 + j)
    for j in range(3):
        conv(f"temporal.{j}", 2 + j)
        bn(f"temporal_bn.{j}", 3 + j)
    for j in range(3):
        conv(f"mid.{j}", 5 + j, one_d=True)
        bn(f"mid_bn.{j}", 6 + j)
    bn("pool_bn", 9)
    bn("dense_bn", 10)
    for ours, name in (("dense", "dense"), ("out", "dense_1")):
        out[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(tf[f"{name}/kernel"].T))
        out[f"{ours}.bias"] = torch.from_numpy(tf[f"{name}/bias"])
    return out


class MusicnnTagger:
    """A pretrained musicnn tagger behind the model protocol (audio only; multi-label).

    ``predict_proba(audio float32 [B, n] at 16 kHz, lyrics ignored) -> [B, 50]``: the mean
    over the audio's 3 s patches of each tag's sigmoid. Any length: no ``window_seconds``,
    so ``--window whole`` hands it the whole track and its patches cover the track.
    ``patch_batch`` patches go through the network at once (memory, not results)."""

    modality = "audio"
    multi_label = True
    sample_rate = SR
    window_seconds = None

    def __init__(self, dataset: str = "MTT", device: str | torch.device | None = None, patch_batch: int | None = None):
        from musiclime.models.tf_checkpoint import read_checkpoint, read_index

        prefix = checkpoint_prefix(dataset)
        names = [n for n in read_index(prefix) if "Adam" not in n and not n.endswith("_power")]
        self.dataset, self.classes = dataset, list(LABELS[dataset])
        self.net = Musicnn(len(self.classes)).eval()
        self.net.load_state_dict(weights_from_tf(read_checkpoint(prefix, names)))
        self.front = MelFrontEnd()
        self.model_id = f"musicnn:{dataset}@{_files_hash(prefix)}"
        self.patch_batch = patch_batch
        if device is not None:
            self.to(device)

    def to(self, device) -> MusicnnTagger:
        self.net.to(device)
        self.front.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def patches(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, n] -> [B, P, 187, 96]``: the log-mel's non-overlapping patches (the rest dropped)."""
        mel = self.front(audio)
        if mel.shape[1] < PATCH:
            mel = mel.repeat(1, math.ceil(PATCH / mel.shape[1]), 1)
        p = mel.shape[1] // PATCH
        return mel[:, : p * PATCH].reshape(mel.shape[0], p, PATCH, N_MELS)

    def predict_proba(self, audio: torch.Tensor, lyrics=None) -> torch.Tensor:
        audio = torch.as_tensor(audio, dtype=torch.float32).to(self.device)
        step = self.patch_batch or (256 if self.device.type == "cuda" else 32)
        with torch.inference_mode():
            patches = self.patches(audio)
            b, p = patches.shape[:2]
            flat = patches.reshape(b * p, PATCH, N_MELS)
            probs = torch.cat([torch.sigmoid(self.net(flat[i : i + step])) for i in range(0, len(flat), step)])
            return probs.reshape(b, p, -1).mean(1)


def _files_hash(prefix: str) -> str:
    """The checkpoint's identity: its index holds every tensor's CRC-32C (verified on load),
    so hashing the index alone names the weights without reading the data file again."""
    import hashlib

    return hashlib.sha256(Path(prefix + ".index").read_bytes()).hexdigest()[:16]
