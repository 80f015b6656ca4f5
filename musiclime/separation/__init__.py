"""Source separation: ``demucs``, ``provided`` stems, ``hpss`` (pure DSP), with a stem cache.

``get_separator(name, **options)`` builds one by name; ``none`` means no separation (a
time-only factorization of the mix).
"""
from __future__ import annotations

from musiclime.separation.base import STEM_NAMES, Separator
from musiclime.separation.cache import StemCache, quantize
from musiclime.separation.hpss import HPSSSeparator
from musiclime.separation.provided import read_provided_stems

SEPARATORS = ("demucs", "provided", "hpss", "none")


def get_separator(name: str, **options) -> Separator | None:
    """``hpss`` and ``demucs`` build a :class:`Separator`; ``provided`` and ``none`` return
    None (stems come from the catalogue, or there is no separation)."""
    if name == "hpss":
        return HPSSSeparator(**options)
    if name == "demucs":
        from musiclime.separation.demucs import DemucsSeparator
        return DemucsSeparator(**options)
    if name in ("provided", "none"):
        return None
    raise ValueError(f"separator must be one of {SEPARATORS}, got {name!r}")


__all__ = ["HPSSSeparator", "STEM_NAMES", "SEPARATORS", "Separator", "StemCache", "get_separator",
           "quantize", "read_provided_stems"]
