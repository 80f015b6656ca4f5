"""Checkpoints: ``config.json`` + ``model.safetensors``; loading never unpickles.

Pretrained encoders that were not fine-tuned (e.g. the frozen all-MiniLM-L6-v2) are not
copied into the checkpoint: the config names where they load from.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from musiclime.models.fusion import LateFusionClassifier

FORMAT = "musiclime-checkpoint"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
def build_encoder(spec: dict) -> nn.Module:
    from musiclime.models.audio import ASTEncoder, LogMelCNN
    from musiclime.models.lyrics import BagOfWordsEncoder, NoLyrics, TransformerLyricsEncoder
    kind = spec.get("type")
    args = {k: v for k, v in spec.items() if k != "type"}
    builders = {"logmel_cnn": LogMelCNN, "ast": ASTEncoder, "bow": BagOfWordsEncoder,
                "transformer": TransformerLyricsEncoder, "none": NoLyrics}
    if kind not in builders:
        raise ValueError(f"unknown encoder type {kind!r}; known: {sorted(builders)}")
    if kind == "logmel_cnn" and "channels" in args:
        args["channels"] = tuple(args["channels"])
    return builders[kind](**args)


def model_config(model: LateFusionClassifier, **extra) -> dict:
    import transformers

    import musiclime
    return {
        "format": FORMAT, "format_version": 1,
        "classes": model.classes, "sample_rate": model.sample_rate, "modality": model.modality.value,
        "audio_encoder": model.audio_encoder.spec(), "lyrics_encoder": model.lyrics_encoder.spec(),
        "head": model.head_config,
        "versions": {"musiclime": musiclime.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        **extra,
    }


def build_model(config: dict) -> LateFusionClassifier:
    """An untrained model with the architecture a config describes."""
    return LateFusionClassifier(build_encoder(config["audio_encoder"]), build_encoder(config["lyrics_encoder"]),
                                config["classes"], config["sample_rate"], config.get("modality", "both"),
                                **config.get("head", {}))


def _frozen_prefixes(model: LateFusionClassifier) -> list[str]:
    """State-dict prefixes of pretrained encoders kept frozen (reloaded from their source)."""
    out = []
    for name in ("audio_encoder", "lyrics_encoder"):
        enc = getattr(model, name)
        if hasattr(enc, "model") and not getattr(enc, "trainable", True):
            out.append(f"{name}.model.")
    return out


def save_checkpoint(model: LateFusionClassifier, directory: str | Path, **extra) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically per file)."""
    from safetensors.torch import save_file
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    skip = _frozen_prefixes(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not any(k.startswith(p) for p in skip)}
    config = model_config(model, frozen=skip, **extra)
    tmp = d / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, d / WEIGHTS)
    tmp = d / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, d / CONFIG)
    return d


def load_checkpoint(directory: str | Path, device: str | torch.device | None = None) -> LateFusionClassifier:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode. Only
    ``config.json`` and ``model.safetensors`` are read: other files in the folder (a
    ``training_args.bin``, say) are never opened."""
    from safetensors.torch import load_file
    d = Path(directory)
    if not (d / CONFIG).is_file():
        raise FileNotFoundError(f"{d} is not a musiclime checkpoint: no {CONFIG}")
    if not (d / WEIGHTS).is_file():
        raise FileNotFoundError(f"{d} has no {WEIGHTS} (musiclime loads safetensors weights only)")
    config = json.loads((d / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{d / CONFIG} is not a {FORMAT} config")
    model = build_model(config)
    state = load_file(str(d / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = tuple(config.get("frozen", []))
    missing = [k for k in missing if not k.startswith(frozen)]
    if missing or unexpected:
        raise ValueError(f"checkpoint {d} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.checkpoint_config = config
    model.model_id = checkpoint_hash(d)
    model.eval()
    return model.to(device) if device is not None else model


def checkpoint_hash(directory: str | Path) -> str:
    """sha256 of the checkpoint's config and weights (the run manifest's model hash)."""
    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(Path(directory) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
