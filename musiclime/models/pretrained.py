"""Pretrained encoders inside a musiclime model: where their weights come from, and which
of their layers train.

A frozen encoder is not copied into the checkpoint: its config names the source (a folder,
or ``hf:ORG/NAME@<commit>``) and the sha256 of its config and safetensors weights, checked
when the checkpoint loads, so a checkpoint never silently runs on other weights. An
encoder with trained layers (``trainable``, or the last ``unfreeze`` layers) is stored in
the checkpoint's safetensors whole.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn


class EncoderWeightsChanged(ValueError):
    """A frozen encoder's source no longer holds the weights the checkpoint was trained on."""


def load_source(source: str | Path, weights_sha256: str | None, stored: bool) -> tuple[str, str, str | None]:
    """``(local folder, pinned source, weights hash)`` of an encoder; the hash is checked
    against ``weights_sha256`` when given and the weights are not stored in the checkpoint."""
    from musiclime.models.sources import encoder_source, folder_hash
    folder, pinned = encoder_source(source)
    if stored:
        return folder, pinned, None
    digest = folder_hash(folder)
    if weights_sha256 and digest != weights_sha256:
        raise EncoderWeightsChanged(f"the frozen encoder {pinned} holds other weights than the checkpoint was "
                                    f"trained with (sha256 {digest[:12]}, expected {weights_sha256[:12]}): "
                                    f"point the checkpoint at the original weights")
    return folder, pinned, digest


def freeze(model: nn.Module, trainable: bool, unfreeze: int, final: tuple[str, ...] = ()) -> tuple[bool, int]:
    """All of ``model`` trains (``trainable``), none of it, or only its last ``unfreeze``
    transformer layers (and the ``final`` modules after them). Returns ``(stored in the
    checkpoint, unfreeze)``."""
    if trainable or unfreeze <= 0:
        model.requires_grad_(trainable)
        return trainable, 0
    layers = _layers(model)
    if unfreeze > len(layers):
        raise ValueError(f"unfreeze={unfreeze}: the encoder has {len(layers)} layers")
    model.requires_grad_(False)
    for layer in layers[-unfreeze:]:
        layer.requires_grad_(True)
    for name in final:
        getattr(model, name).requires_grad_(True)
    return True, unfreeze


def _layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers (``encoder.layer`` in BERT-style models, ``layers``
    in transformers 5's AST)."""
    for path in ("encoder.layer", "layers", "encoder.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__} to unfreeze")
