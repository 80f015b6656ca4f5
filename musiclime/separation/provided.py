"""Stems given by the catalogue (a previous run, a studio multitrack)."""
from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch

from musiclime.errors import InputError
from musiclime.separation.base import STEM_NAMES


def read_provided_stems(paths: dict[str, str | Path | None], sample_rate: int,
                        stem_names: tuple[str, ...] = STEM_NAMES, max_seconds: float | None = None,
                        tolerance_samples: int = 0) -> tuple[torch.Tensor, list[str], float]:
    """Decode one file per stem to ``[n_stems, T]`` mono at ``sample_rate``; returns the
    stems, flags, and where the window starts in the track (seconds).

    Every stem must exist, decode, and have the same length and original sample rate
    (lengths may differ by ``tolerance_samples``, then the shortest wins).

    Raises:
        InputError: ``missing_file`` / ``decode_error`` naming the stem,
            ``stem_mismatch`` when sample rates or lengths disagree.
    """
    from musiclime import storage
    from musiclime.audio_io import file_exists, read_window
    from musiclime.av_decode import probe
    missing = [s for s in stem_names if not paths.get(s)]
    if missing:
        raise InputError("missing_file", f"no path for stems {missing}")
    infos = {}
    for s in stem_names:
        p = Path(str(paths[s]).split("?")[0])
        if not file_exists(paths[s]):
            raise InputError("missing_file", f"stem {s!r}: no file at {paths[s]}")
        source = storage.readable(cast(str, paths[s]))  # none is missing (above)
        try:
            infos[s] = probe(source, p.name)
        except InputError as e:
            raise InputError("decode_error", f"stem {s!r}: {e.message}") from None
        finally:
            if not isinstance(source, str):
                source.close()
    rates = {s: i[0] for s, i in infos.items()}
    if len(set(rates.values())) > 1:
        raise InputError("stem_mismatch", f"stems have different sample rates: {rates}")
    frames = {s: i[1] or 0 for s, i in infos.items()}
    if max(frames.values()) - min(frames.values()) > tolerance_samples:
        raise InputError("stem_mismatch", f"stems have different lengths (samples): {frames}")
    decoded, flags, start_s = [], set(), 0.0
    for s in stem_names:
        d = read_window(cast(str, paths[s]), sample_rate, mono=True, max_seconds=max_seconds)
        decoded.append(d.audio)
        flags.update(d.flags)
        start_s = d.start_s
    n = min(len(x) for x in decoded)
    return torch.from_numpy(np.stack([x[:n] for x in decoded])), sorted(flags), start_s
