"""One place that turns a ``--model`` spec into a model.

Forms (``musiclime explain --help`` lists them):

- ``default`` / ``default:emotion``: the offline default model ``musiclime train`` (or
  ``make demo``) wrote into ``$MUSICLIME_HOME/models/default-<task>``;
- a folder: its ``config.json`` says what it is: a musiclime checkpoint (the fusion head
  plus its encoders), a Hugging Face audio classifier (explained on audio alone) or text
  classifier (lyrics alone), in ``save_pretrained`` layout;
- ``hf:ORG/NAME[@REVISION]``: a model on the Hugging Face hub, of either HF kind: fetched
  when the hub is reachable and ``HF_HUB_OFFLINE`` is unset (only the files a model needs),
  else loaded from the HF cache;
- ``musicnn:MTT`` / ``musicnn:MSD``: the pretrained musicnn taggers (MagnaTagATune, Million
  Song Dataset: 50 tags each), weights from the installed ``musicnn`` wheel
  (:mod:`musiclime.models.musicnn`);
- ``package.module:factory``: a plugin whose ``factory()`` returns an object that follows
  the model protocol (``classes``, ``sample_rate``, ``predict_proba``).

:func:`resolve` runs once in the driver, before Ray starts: anything else is a usage error
(exit 2), and a hub revision is pinned to its commit, so every actor loads that exact
revision (:func:`load_model` of the resolved ``location``). Each kind is one small loader.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musiclime.models.sources import HUB, HUB_FILES, ModelNotAvailable, encoder_source, folder_hash, hub_snapshot  # noqa: F401

CHECKPOINT, PLUGIN, MUSICNN = "musiclime-checkpoint", "plugin", "musicnn"
FORMS = ("default | default:emotion | musicnn:MTT | musicnn:MSD (pretrained taggers) | a folder (musiclime checkpoint, or a Hugging Face audio or text "
         "classifier saved with save_pretrained) | hf:ORG/NAME[@REVISION] (Hugging Face hub) | "
         "package.module:factory (a plugin)")


def musiclime_home() -> Path:
    """Where cached models, demo libraries and stems live (``$MUSICLIME_HOME``)."""
    return Path(os.environ.get("MUSICLIME_HOME", Path.home() / ".cache" / "musiclime"))


def default_checkpoint(task: str = "genre") -> Path:
    return musiclime_home() / "models" / f"default-{task}"


@dataclass(frozen=True)
class ResolvedModel:
    """A spec resolved in the driver: ``location`` is what every actor loads (a folder,
    ``hf:ORG/NAME@<commit>``, or ``module:factory``); ``modality`` is ``audio`` / ``lyrics``
    for a classifier of one modality; ``max_seconds`` the audio window the model sees."""
    spec: str
    kind: str
    location: str
    modality: str | None = None
    max_seconds: float | None = None


def resolve(spec: str) -> ResolvedModel:
    """Check a spec and pin it (see the module doc); ValueError (or ModelNotAvailable) when
    it names nothing loadable."""
    if spec == "default" or spec.startswith("default:"):
        task = spec.partition(":")[2] or "genre"
        path = default_checkpoint(task)
        if not path.is_dir():
            raise FileNotFoundError(f"no default {task} model at {path}: run `make demo` or "
                                    f"`musiclime train --task {task}` first")
        return ResolvedModel(spec, CHECKPOINT, str(path))
    hub = HUB.fullmatch(spec)
    if hub:
        folder = hub_snapshot(hub["repo"], hub["rev"])
        kind = _folder_kind(folder, spec)
        return _described(ResolvedModel(spec, kind, f"hf:{hub['repo']}@{Path(folder).name}"), folder)
    if Path(spec).is_dir():
        return _described(ResolvedModel(spec, _folder_kind(spec, spec), str(Path(spec).resolve())), spec)
    if spec.startswith("musicnn:"):
        from musiclime.models.musicnn import DATASETS, checkpoint_prefix
        if spec.partition(":")[2] not in DATASETS:
            raise ValueError(f"--model {spec!r}: musicnn's taggers are {', '.join('musicnn:' + d for d in DATASETS)}")
        checkpoint_prefix(spec.partition(":")[2])  # installed, or a usage error before any actor starts
        return ResolvedModel(spec, MUSICNN, spec, "audio")
    if spec.startswith("hf:"):
        raise ValueError(f"--model {spec!r}: a hub model is hf:ORG/NAME or hf:ORG/NAME@REVISION")
    if ":" in spec and not Path(spec).exists() and re.fullmatch(r"[\w.]+:\w+", spec):
        _plugin_factory(spec)  # importable here, or a usage error before any actor starts
        return ResolvedModel(spec, PLUGIN, spec)
    raise ValueError(f"--model {spec!r} is not a model musiclime can load: use {FORMS}")


def _folder_kind(folder: str | Path, spec: str) -> str:
    import json

    from musiclime.models.hf import folder_kind
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"--model {spec!r}: {folder} has no config.json (use {FORMS})") from None
    if config.get("format") == CHECKPOINT:
        return CHECKPOINT
    kind = folder_kind(folder)
    if kind is None:
        raise ValueError(f"--model {spec!r}: {folder}/config.json describes neither a musiclime checkpoint nor a "
                         f"Hugging Face audio or sequence classifier (architectures: "
                         f"{config.get('architectures')}); an encoder alone is used through `musiclime train`")
    return kind


def _described(ref: ResolvedModel, folder: str | Path) -> ResolvedModel:
    """The modality and window a classifier of one modality implies, read from its files."""
    import json

    from musiclime.models.hf import AUDIO, TEXT, require_safetensors
    if ref.kind not in (AUDIO, TEXT):
        return ref
    require_safetensors(folder)
    if ref.kind == TEXT:
        return ResolvedModel(ref.spec, ref.kind, ref.location, "lyrics")
    seconds = None
    try:
        fe = json.loads((Path(folder) / "preprocessor_config.json").read_text())
        if fe.get("feature_extractor_type") == "ASTFeatureExtractor":
            seconds = int(fe.get("max_length", 1024)) * 0.010
    except FileNotFoundError:
        raise ValueError(f"--model {ref.spec!r}: {folder} has no preprocessor_config.json (the feature "
                         f"extractor's settings: sample rate, input length)") from None
    return ResolvedModel(ref.spec, ref.kind, ref.location, "audio", seconds)


# ------------------------------------------------------------------------------ loaders

def _load_checkpoint(folder: str, device):
    from musiclime.models.checkpoint import load_checkpoint
    return load_checkpoint(folder, device)


def _load_hf(kind: str):
    def load(folder: str, device):
        from musiclime.models.hf import AUDIO, HFAudioClassifier, HFTextClassifier
        model: Any = (HFAudioClassifier if kind == AUDIO else HFTextClassifier)(folder, device)
        model.model_id = folder_hash(folder)
        return model
    return load


def _plugin_factory(spec: str):
    import sys
    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: plugins next to where the user stands
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load model plugin {spec!r}: {e}") from e


def _load_plugin(spec: str, device):
    from musiclime.protocol import check_model
    model = _plugin_factory(spec)()
    check_model(model)
    if device is not None and hasattr(model, "to"):
        model = model.to(device)
    return model


def _load_musicnn(location: str, device):
    from musiclime.models.musicnn import MusicnnTagger
    return MusicnnTagger(location.partition(":")[2], device)


def _loaders() -> dict:
    from musiclime.models.hf import AUDIO, TEXT
    return {CHECKPOINT: _load_checkpoint, AUDIO: _load_hf(AUDIO), TEXT: _load_hf(TEXT), MUSICNN: _load_musicnn}


def load_model(spec: str, device: str | torch.device | None = None):
    """The model a spec (or a resolved location) names, ready for the explainer."""
    ref = resolve(spec)
    if ref.kind == PLUGIN:
        return _load_plugin(ref.location, device)
    hub = HUB.fullmatch(ref.location)
    folder = hub_snapshot(hub["repo"], hub["rev"]) if hub else ref.location
    return _loaders()[ref.kind](folder, device)
