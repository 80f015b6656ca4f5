"""Resolve a ``--model`` spec: ``default``, a checkpoint directory, or ``module:factory``."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch


def musiclime_home() -> Path:
    """Where cached models, demo libraries and stems live (``$MUSICLIME_HOME``)."""
    return Path(os.environ.get("MUSICLIME_HOME", Path.home() / ".cache" / "musiclime"))


def default_checkpoint(task: str = "genre") -> Path:
    return musiclime_home() / "models" / f"default-{task}"


def load_model(spec: str, device: str | torch.device | None = None):
    """The model a spec names, ready for the explainer.

    - ``default`` (or ``default:emotion``): the offline default model trained by
      ``musiclime train`` / ``make demo`` into ``$MUSICLIME_HOME/models/default-<task>``.
    - a directory: a checkpoint (``config.json`` + ``model.safetensors``).
    - ``package.module:factory``: a plugin; ``factory()`` returns an object that follows
      the model protocol (``classes``, ``sample_rate``, ``predict_proba``).
    """
    from musiclime.models.checkpoint import load_checkpoint
    from musiclime.protocol import check_model
    if spec == "default" or spec.startswith("default:"):
        task = spec.partition(":")[2] or "genre"
        path = default_checkpoint(task)
        if not path.is_dir():
            raise FileNotFoundError(f"no default {task} model at {path}: run `make demo` or "
                                    f"`musiclime train --task {task}` first")
        return load_checkpoint(path, device)
    if Path(spec).is_dir():
        return load_checkpoint(spec, device)
    if ":" in spec and not Path(spec).exists():
        mod_name, _, attr = spec.partition(":")
        import sys
        if os.getcwd() not in sys.path:  # like `python -m`: plugins next to where the user stands
            sys.path.append(os.getcwd())
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot load model plugin {spec!r}: {e}") from e
        model = factory()
        check_model(model)
        if device is not None and hasattr(model, "to"):
            model = model.to(device)
        return model
    raise ValueError(f"--model {spec!r} is neither 'default', a checkpoint directory, nor "
                     f"'package.module:factory'")
