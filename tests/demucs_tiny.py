"""A tiny random-init HTDemucs written the way demucs publishes models (a bag yaml plus
one safetensors per model, class and arguments in the metadata), and as a legacy pickle."""
from __future__ import annotations

import json
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]  # demucs' own order, not ours
KWARGS = dict(sources=SOURCES, audio_channels=2, samplerate=44100, segment=4, channels=8, depth=4, t_layers=0)


def tiny_htdemucs():
    import torch
    from demucs.htdemucs import HTDemucs
    torch.manual_seed(0)
    return HTDemucs(**KWARGS).eval()


def save_tiny_demucs(repo: Path, name: str = "tiny", sig: str = "tinysig0", klass: str = "demucs.htdemucs.HTDemucs") -> Path:
    from safetensors.torch import save_file
    repo.mkdir(parents=True, exist_ok=True)
    model = tiny_htdemucs()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(repo / f"{sig}.safetensors"),
              metadata={"klass": klass, "args": json.dumps([]), "kwargs": json.dumps(KWARGS)})
    (repo / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
    return repo


def save_tiny_demucs_pickle(repo: Path, name: str = "tinypkl") -> Path:
    import torch
    from demucs.htdemucs import HTDemucs
    repo.mkdir(parents=True, exist_ok=True)
    model = tiny_htdemucs()
    torch.save({"klass": HTDemucs, "args": (), "kwargs": KWARGS, "state": model.state_dict(),
                "training_args": None}, repo / f"{name}.th")
    return repo
