"""Stems on disk, keyed by what produced them, so no audio is ever separated twice.

Key: sha256 of (decoded audio bytes, sample rate, separator's cache params, musiclime
version). Entries are float16 safetensors written to a temporary name and renamed into
place (atomic on POSIX), so concurrent writers of one key never leave a torn file. Each
entry carries the sha256 of its payload in its metadata: a corrupt or partial entry (bit
rot, a half-copied file, zeroed pages) fails its checks on read and is recomputed.

The root may be on shared storage so every node reuses stems: an NFS path, or an object
store URI (``s3://bucket/stems``), where an entry is one PUT (atomic there: concurrent
writers of one key each put a whole, identical entry) and is read whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import torch

from musiclime.separation.base import Separator, as_channels


def quantize(stems: torch.Tensor) -> torch.Tensor:
    """Stems as the cache stores them (float16), back as float32: fresh and cached stems
    are then bit-identical, so explanations do not depend on cache hits."""
    return stems.to(torch.float16).to(torch.float32)


def payload_digest(stems: torch.Tensor) -> str:
    """sha256 of the float16 payload as stored."""
    return hashlib.sha256(stems.to(torch.float16).contiguous().numpy().tobytes()).hexdigest()


def _metadata(blob: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's header (8-byte length, then JSON)."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]).get("__metadata__", {})


class StemCache:
    def __init__(self, root: str | Path, readonly: bool = False):
        """``readonly``: a reader's view (musiclime serve, report): a bad entry is skipped,
        not deleted, and nothing is stored."""
        from musiclime import storage
        self.readonly = readonly
        self.remote = storage.is_object_store(root)
        self.root = str(root) if self.remote else Path(root)
        self.hits = self.misses = self.recomputed = 0

    def key(self, audio: torch.Tensor, sample_rate: int, separator: Separator) -> str:
        import musiclime
        h = hashlib.sha256()
        a = np.ascontiguousarray(as_channels(audio).cpu().numpy())
        h.update(json.dumps({"shape": list(a.shape), "sr": int(sample_rate), "params": separator.cache_params(),
                             "musiclime": musiclime.__version__}, sort_keys=True).encode())
        h.update(a.tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path | str:
        if self.remote:
            return f"{str(self.root).rstrip('/')}/{key[:2]}/{key}.safetensors"
        return Path(self.root) / key[:2] / f"{key}.safetensors"

    def _read(self, p) -> tuple[dict, torch.Tensor] | None:
        """(metadata, stems) of an entry, or None when there is none."""
        from safetensors import safe_open
        if self.remote:
            from safetensors.torch import load

            from musiclime import storage
            if not storage.is_file(p):
                return None
            blob = storage.read_bytes(p)
            return _metadata(blob), load(blob)["stems"]
        if not p.is_file():
            return None
        with safe_open(str(p), framework="pt") as f:
            return f.metadata() or {}, f.get_tensor("stems")

    def load(self, key: str, n_samples: int, stem_names: tuple[str, ...]) -> torch.Tensor | None:
        """The cached stems, or None when absent or not a whole, matching entry."""
        p = self.path(key)
        try:
            found = self._read(p)
            if found is None:
                return None
            meta, stems = found
            ok = (meta.get("key") == key and json.loads(meta.get("stem_names", "[]")) == list(stem_names)
                  and tuple(stems.shape) == (len(stem_names), n_samples)
                  and meta.get("sha256") == payload_digest(stems))
        except Exception:
            ok = False
        if not ok:
            self.recomputed += 1
            if self.readonly:
                return None
            if self.remote:
                from musiclime import storage
                storage.delete(str(p))
            else:
                Path(p).unlink(missing_ok=True)
            return None
        return stems.to(torch.float32)

    def store(self, key: str, stems: torch.Tensor, stem_names: tuple[str, ...], sample_rate: int) -> None:
        from safetensors.torch import save, save_file
        if self.readonly:
            raise PermissionError(f"the stem cache {self.root} was opened read-only")
        p = self.path(key)
        payload = stems.detach().to("cpu", torch.float16).contiguous()
        meta = {"key": key, "stem_names": json.dumps(list(stem_names)), "sample_rate": str(sample_rate),
                "sha256": payload_digest(payload)}
        if self.remote:
            from musiclime import storage
            storage.write_bytes(str(p), save({"stems": payload}, metadata=meta))
            return
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        save_file({"stems": payload}, str(tmp), metadata=meta)
        os.replace(tmp, p)

    def separate(self, separator: Separator, audio, sample_rate: int,
                 device: str | None = None) -> tuple[torch.Tensor, bool]:
        """``(stems float32 [n_stems, T], cache_hit)``; separates and stores on a miss. With
        ``device``, the stems come back on it (a separator that runs there keeps them there:
        only the store copies them to the host)."""
        return self.separate_many(separator, [audio], sample_rate, device)[0]

    def separate_many(self, separator: Separator, audios: list, sample_rate: int,
                      device: str | None = None) -> list[tuple[torch.Tensor, bool]]:
        """:meth:`separate` for several tracks: the misses go to the separator in one
        ``separate_batch`` call where it has one (demucs), each stored on its own."""
        audios = [as_channels(a) for a in audios]
        keys = [self.key(a, sample_rate, separator) for a in audios]
        out: list = [None] * len(audios)
        misses = []
        for i, (audio, key) in enumerate(zip(audios, keys)):
            cached = self.load(key, audio.shape[1], separator.stem_names)
            if cached is None:
                misses.append(i)
            else:
                self.hits += 1
                out[i] = ((cached if device is None else cached.to(device)), True)
        if misses:
            self.misses += len(misses)
            batch = getattr(separator, "separate_batch", None)
            fresh = batch([audios[i] for i in misses], sample_rate) if batch else \
                [separator.separate(audios[i], sample_rate) for i in misses]
            for i, stems in zip(misses, fresh):
                self.store(keys[i], stems, separator.stem_names, sample_rate)
                stems = quantize(stems)
                out[i] = ((stems if device is None else stems.to(device)), False)
        return out
