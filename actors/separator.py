"""SeparatorActor: holds a separator (demucs on the GPU when there is one) and the stem
cache; fills in a TrackInput's stems from its mix."""
from __future__ import annotations

import time


class SeparatorActor:
    def __init__(self, name: str, options: dict, cache_dir: str):
        from musiclime.separation import StemCache, get_separator
        self.separator = get_separator(name, **options)
        self.cache = StemCache(cache_dir)

    def separate(self, inp):
        from musiclime.errors import InputError
        from musiclime.stages import ErrorRecord
        if isinstance(inp, ErrorRecord) or inp.stems is not None:
            return inp
        t0 = time.perf_counter()
        try:
            stems, _ = self.cache.separate(self.separator, inp.mix, inp.sample_rate)
        except InputError as e:
            return ErrorRecord(inp.track_id, inp.catalogue_row, "separate", e.code, f"track {inp.track_id!r}: {e.message}")
        inp.stems, inp.mix = stems.numpy(), None
        inp.timings["separate_s"] = time.perf_counter() - t0
        return inp

    def stats(self) -> dict:
        return {"hits": self.cache.hits, "misses": self.cache.misses}
