"""musiclime: MusicLIME explanations of multimodal (audio + lyrics) music classifiers.

The core is Ray-free and usable in a notebook::

    from musiclime import AudioFactorization, LyricsFactorization, MusicLIME
    exp = MusicLIME(num_samples=1000, seed=0).explain(model, AudioFactorization(stems, sr),
                                                      LyricsFactorization(lyrics))
    print(exp)

Names are imported lazily so that light commands (``musiclime --help``) do not pay for
torch at start-up.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "AudioFactorization": "musiclime.factorization",
    "LyricsFactorization": "musiclime.factorization",
    "MusicLIME": "musiclime.explainer",
    "Explanation": "musiclime.explanation",
    "FeatureLayout": "musiclime.layout",
    "sample_masks": "musiclime.masks",
    "Modality": "musiclime.masks",
    "fit_surrogate": "musiclime.surrogate",
    "SurrogateFit": "musiclime.surrogate",
    "FeatureSelection": "musiclime.surrogate",
    "InputError": "musiclime.errors",
    "MusicModel": "musiclime.protocol",
    "LateFusionModel": "musiclime.protocol",
}
__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from musiclime.errors import InputError
    from musiclime.explainer import MusicLIME
    from musiclime.explanation import Explanation
    from musiclime.factorization import AudioFactorization, LyricsFactorization
    from musiclime.layout import FeatureLayout
    from musiclime.masks import Modality, sample_masks
    from musiclime.protocol import LateFusionModel, MusicModel
    from musiclime.surrogate import FeatureSelection, SurrogateFit, fit_surrogate


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'musiclime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
