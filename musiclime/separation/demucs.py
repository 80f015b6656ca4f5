"""demucs (htdemucs or any demucs model) through the ``demucs`` package.

Where the weights come from, safest first:
1. ``repo`` holding ``{name}.yaml`` + ``{sig}.safetensors`` (the layout demucs publishes
   on the Hugging Face hub; copy a downloaded model folder here), or a single
   ``{name}.safetensors``;
2. the Hugging Face cache (``HF_HUB_OFFLINE``: never downloaded at run time);
3. ``{name}.th`` in ``repo``: a PyTorch pickle, loaded only with ``allow_pickle=True``
   (a pickle runs code when loaded: only from a trusted place).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from musiclime.separation.base import STEM_NAMES, Separator, as_channels


class UnsafeWeightsError(ValueError):
    """Weights that would need unpickling, or metadata naming a non-demucs class."""


# demucs.hf builds ``klass(*args, **kwargs)`` from a file's metadata, so the metadata picks
# what runs. Only these model classes may be named: an allow-list, because a prefix such as
# "demucs." would also admit loader functions (demucs.states.load_model, ...).
ALLOWED_CLASSES = frozenset({
    "demucs.htdemucs.HTDemucs",
    "demucs.hdemucs.HDemucs",
    "demucs.demucs.Demucs",
})


def _check_safetensors_metadata(path: Path) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    klass = meta.get("klass", "")
    if klass not in ALLOWED_CLASSES:
        raise UnsafeWeightsError(f"{path.name}: metadata names {klass!r}, which is not a demucs model class "
                                 f"({', '.join(sorted(ALLOWED_CLASSES))}); refused")


def load_demucs(name: str = "htdemucs", repo: str | Path | None = None, allow_pickle: bool = False):
    """A demucs model or bag of models, in eval mode."""
    import yaml
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model
    if repo is not None:
        repo = Path(repo)
        if not repo.is_dir():
            raise FileNotFoundError(f"demucs repo {repo} is not a directory")
        bag_file, single = repo / f"{name}.yaml", repo / f"{name}.safetensors"
        if bag_file.is_file():
            bag = yaml.safe_load(bag_file.read_text())
            files = [repo / f"{sig}.safetensors" for sig in bag["models"]]
            for f in files:
                _check_safetensors_metadata(f)
            model = BagOfModels([load_safetensors_model(f) for f in files], bag.get("weights"), bag.get("segment"))
        elif single.is_file():
            _check_safetensors_metadata(single)
            model = load_safetensors_model(single)
        elif (repo / f"{name}.th").is_file():
            if not allow_pickle:
                raise UnsafeWeightsError(
                    f"{repo / (name + '.th')} is a PyTorch pickle; pass allow_pickle=True (--trust-pickle) "
                    f"only for weights from a trusted place, or convert it to safetensors")
            from demucs.pretrained import get_model
            model = get_model(name, repo=repo)
        else:
            raise FileNotFoundError(f"no {name}.yaml, {name}.safetensors or {name}.th in {repo}")
    else:
        from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
        from huggingface_hub import hf_hub_download
        ns, _, short = name.rpartition("/")
        repo_id = f"{ns or DEFAULT_NAMESPACE}/{hf_repo_name(short)}"
        try:
            bag = yaml.safe_load(Path(hf_hub_download(repo_id, f"{short}.yaml", local_files_only=True)).read_text())
            files = [Path(hf_hub_download(repo_id, f"{sig}.safetensors", local_files_only=True)) for sig in bag["models"]]
        except Exception as e:
            raise FileNotFoundError(
                f"demucs model {name!r} is not in the local Hugging Face cache ({e.__class__.__name__}); "
                f"place its files (the {short}.yaml and .safetensors of {repo_id}) in a folder and pass "
                f"--demucs-repo FOLDER") from None
        for f in files:
            _check_safetensors_metadata(f)
        model = BagOfModels([load_safetensors_model(f) for f in files], bag.get("weights"), bag.get("segment"))
    model.eval()
    return model


BF16_TOLERANCE = 1e-2  # the largest relative stem error bf16 may add to fp32 (see DemucsSeparator)


def relative_error(stems: torch.Tensor, reference: torch.Tensor) -> float:
    """The worst stem's ``||stems - reference|| / ||reference||`` (``[n_stems, T]`` each)."""
    diff = (stems.float() - reference.float()).norm(dim=-1)
    return float((diff / reference.float().norm(dim=-1).clamp(min=1e-12)).max())


def check_clip(sample_rate: int, seconds: float = 4.0) -> torch.Tensor:
    """A fixed stereo clip with tones, a beat and noise: what the bf16 check separates."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(sample_rate * seconds)) / sample_rate
    tones = sum(torch.sin(2 * torch.pi * f * t) / (k + 1) for k, f in enumerate((110.0, 220.0, 440.0, 659.3)))
    beat = (torch.sin(2 * torch.pi * 2.0 * t) > 0.95).float() * torch.randn(len(t), generator=g)
    mono = 0.2 * tones + 0.3 * beat + 0.02 * torch.randn(len(t), generator=g)
    return torch.stack([mono, 0.9 * mono])


class DemucsSeparator(Separator):
    sample_rate: int  # the model's rate, read when it loads
    """Args:
        model_name: demucs model name, e.g. ``htdemucs``.
        repo: local folder with the weights (see module doc); None: the HF cache.
        device: ``cuda`` when available by default.
        segment_s: chunk length in seconds (None: the model's own); long tracks are
            separated in overlapping chunks so memory stays bounded.
        overlap: chunk overlap fraction. shifts: random shifts averaged (0 = none,
            deterministic).
        allow_pickle: accept a legacy ``.th`` pickle from ``repo``.
        precision: ``fp32``, ``bf16`` (autocast), or ``auto``: bf16 on a GPU when these
            weights on this device separate :func:`check_clip` within ``BF16_TOLERANCE``
            relative error of fp32, else fp32. The precision is part of the cache key.
    """
    name = "demucs"

    def __init__(self, model_name: str = "htdemucs", repo: str | Path | None = None, device: str | None = None,
                 segment_s: float | None = None, overlap: float = 0.25, shifts: int = 0, allow_pickle: bool = False,
                 precision: str = "auto"):
        self.model_name = model_name
        self.repo = str(repo) if repo is not None else None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.segment_s, self.overlap, self.shifts = segment_s, overlap, shifts
        self.model = load_demucs(model_name, repo, allow_pickle).to(self.device)
        self.sample_rate = int(self.model.samplerate)
        missing = [s for s in STEM_NAMES if s not in self.model.sources]
        if missing:
            raise ValueError(f"demucs model {model_name} has sources {self.model.sources}, missing {missing}")
        self._order = [self.model.sources.index(s) for s in STEM_NAMES]
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"demucs precision must be auto, fp32 or bf16, got {precision!r}")
        self.precision, self.bf16_error = "fp32", None
        if precision == "bf16" or (precision == "auto" and str(self.device).startswith("cuda")
                                   and torch.cuda.is_bf16_supported()):
            self.precision = "bf16"
            self.bf16_error = self.bf16_check()
            if precision == "auto" and self.bf16_error > BF16_TOLERANCE:
                self.precision = "fp32"

    def bf16_check(self) -> float:
        """Relative error of bf16 against fp32 on :func:`check_clip` (worst stem)."""
        clip = check_clip(self.sample_rate)
        keep = self.precision
        try:
            self.precision = "fp32"
            want = self.separate(clip, self.sample_rate)
            self.precision = "bf16"
            got = self.separate(clip, self.sample_rate)
        finally:
            self.precision = keep
        return relative_error(got, want)

    def cache_params(self) -> dict:
        import demucs
        params = {**super().cache_params(), "model": self.model_name, "segment_s": self.segment_s,
                  "overlap": self.overlap, "shifts": self.shifts, "demucs": demucs.__version__,
                  "weights": self._weights_id()}
        if self.precision != "fp32":  # fp32 entries keep the keys they had before precisions
            params["precision"] = self.precision
        return params

    def _weights_id(self) -> str:
        import hashlib
        h = hashlib.sha256()
        # the bytes, not a float sum: a parallel sum's low bits change with the thread count,
        # which would give a Ray worker (one thread) and the report different cache keys
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(json.dumps([list(v.shape), str(v.dtype)]).encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def separate(self, audio, sample_rate: int) -> torch.Tensor:
        """Stems on ``self.device``: resampling runs there too, so a GPU stage composes masks
        from them without a host round trip."""
        return self.separate_batch([audio], sample_rate)[0]

    def separate_batch(self, audios: list, sample_rate: int) -> list[torch.Tensor]:
        """Several tracks (or windows) at once: those of equal length go through demucs in
        one batched call (a GPU's throughput needs the batch); each is normalised on its
        own, as alone. Stems ``[n_stems, T]`` per input, in order."""
        from musiclime.audio_io import resample_tensor
        prepared = []
        for audio in audios:
            x = as_channels(audio).to(self.device)
            channels = self.model.audio_channels
            x = x.mean(0, keepdim=True).expand(channels, -1) if x.shape[0] != channels else x
            prepared.append(resample_tensor(x, sample_rate, self.sample_rate))
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(prepared):
            by_length.setdefault(x.shape[1], []).append(i)
        out: list[torch.Tensor] = [torch.empty(0)] * len(audios)
        for index in by_length.values():
            stems = self._separate(torch.stack([prepared[i] for i in index]))
            for i, s in zip(index, stems):
                s = resample_tensor(s[self._order].contiguous(), self.sample_rate, sample_rate)
                T = as_channels(audios[i]).shape[1]
                if s.shape[1] < T:
                    s = torch.nn.functional.pad(s, (0, T - s.shape[1]))
                out[i] = s[:, :T].contiguous().to(torch.float32)
        return out

    def _separate(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, channels, T]`` at the model's rate -> mono stems ``[B, sources, T]``."""
        import contextlib

        from demucs.apply import apply_model
        ref = x.mean(1)
        mean = ref.mean(1)[:, None, None]
        std = ref.std(1).clamp(min=1e-8)[:, None, None]  # demucs' own normalisation, per track
        cast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16) if self.precision == "bf16" \
            else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            out = apply_model(self.model, (x - mean) / std, shifts=self.shifts, split=True,
                              overlap=self.overlap, segment=self.segment_s, device=self.device)
        out = out.to(x.device).float() * std[:, None] + mean[:, None]
        return out.mean(2)  # [B, sources, T]
