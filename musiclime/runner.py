"""Runs a model over the mask rows of one track: batching with out-of-memory retry, an
output cache across rounds, and late fusion (encoders once per distinct half-mask)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from musiclime.errors import InputError
from musiclime.factorization import AudioFactorization, LyricsFactorization
from musiclime.masks import unique_rows
from musiclime.protocol import as_embedding, as_probs, check_model, has_mask_lyrics, is_late_fusion, model_device

# Rows per model call when batch_size="auto", per device type. Measured by
# bench/bench_core.py: on 2-core CPUs batches of a few rows beat large ones per row
# (cache effects), on GPUs large batches keep the device busy.
AUTO_BATCH_SIZE = {"cpu": 8, "cuda": 256}
# Perturbations are composed (audio summed, lyrics joined) in blocks of this many rows by
# one op each, then fed to the model in batches of batch_size: composing costs one call
# per block, not per batch, and memory holds one block of audio at a time.
COMPOSE_BLOCK = 16
COMPOSE_BYTES = 128 << 20  # ...and fewer for long tracks: a block of perturbed audio stays under
# this per 8 rows of model batch (a CPU's 128 MB; a GPU's batch of 256: up to COMPOSE_BYTES_MAX)
COMPOSE_BYTES_MAX = 2 << 30
HEAD_BATCH_SIZE = 4096  # a late-fusion head is tiny next to the encoders


def compose_rows(batch: int, n_samples: int) -> int:
    """Rows composed at once: a block of ``max(COMPOSE_BLOCK, batch)`` rows, fewer when the
    track is long (CPU, a 10-minute track at 16 kHz: 3 rows of 38 MB; a GPU's 30 s block
    keeps its 256 rows), at least one."""
    budget = min(COMPOSE_BYTES * max(1, batch // 8), COMPOSE_BYTES_MAX)
    return max(1, min(max(COMPOSE_BLOCK, batch), budget // max(4 * n_samples, 1)))


ProgressFn = Callable[[int, int], None]
"""``progress(rows_done, rows_total)``, called after every model batch."""


def auto_batch_size(device: torch.device | str | None) -> int:
    kind = torch.device(device).type if device is not None else "cpu"
    return AUTO_BATCH_SIZE.get(kind, AUTO_BATCH_SIZE["cpu"])


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class _Batcher:
    """Runs ``fn`` over row slices of at most ``size`` rows; on CUDA out-of-memory halves
    ``size`` and retries the same slice, so a too-large batch costs one retry, not a crash."""

    def __init__(self, size: int):
        self.size = max(1, int(size))

    def run(self, n: int, fn: Callable[[slice], object], progress: Callable[[int], None] | None = None):
        """``[fn(slice) for each batch of rows 0..n]``."""
        out, start = [], 0
        while start < n:
            sl = slice(start, min(start + self.size, n))
            try:
                out.append(fn(sl))
            except torch.cuda.OutOfMemoryError:
                if self.size == 1:
                    raise
                self.size //= 2
                torch.cuda.empty_cache()
                continue
            start = sl.stop
            if progress:
                progress(sl.stop - sl.start)
        return out


class OutputCache:
    """Per-track memo of model outputs keyed by mask bytes (one store per kind: joint
    rows' probabilities, or a late-fusion model's audio / lyrics embeddings), so growing
    sample sets (``num_samples="auto"``) pay only for masks not seen before."""

    def __init__(self) -> None:
        self._index: dict[str, dict[bytes, int]] = {}
        self._chunks: dict[str, list] = {}
        self.rows_computed = 0

    def missing(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """Indices of ``rows`` (``uint8 [n, width]``) with no stored output."""
        index = self._index.setdefault(kind, {})
        return np.array([i for i, r in enumerate(rows) if r.tobytes() not in index], dtype=np.int64)

    def add(self, kind: str, rows: np.ndarray, values) -> None:
        index, chunks = self._index.setdefault(kind, {}), self._chunks.setdefault(kind, [])
        start = len(index)
        for i, r in enumerate(rows):
            index[r.tobytes()] = start + i
        chunks.append(values)
        self.rows_computed += len(rows)

    def gather(self, kind: str, rows: np.ndarray):
        """Stored outputs of ``rows`` in order (a torch tensor or numpy array)."""
        chunks = self._chunks[kind]
        if len(chunks) > 1:  # one contiguous block from now on
            chunks[:] = [torch.cat(chunks) if isinstance(chunks[0], torch.Tensor) else np.concatenate(chunks)]
        idx = [self._index[kind][r.tobytes()] for r in rows]
        block = chunks[0]
        return block[torch.as_tensor(idx, device=block.device)] if isinstance(block, torch.Tensor) else block[idx]


class ModelRunner:
    """A model and how to feed it: ``predict(af, lf, masks)`` returns the probabilities of
    every mask row, evaluating each distinct perturbation (or, for a late-fusion model,
    each distinct half-mask) once.

    Args:
        model: follows :class:`musiclime.protocol.MusicModel`.
        batch_size: rows per model call, or ``"auto"`` (:data:`AUTO_BATCH_SIZE`).
    """

    def __init__(self, model, batch_size: int | str = "auto"):
        check_model(model)
        self.model = model
        self.batch_size = batch_size
        self.late_fusion = is_late_fusion(model)

    def predict(self, af: AudioFactorization, lf: LyricsFactorization, masks: np.ndarray,
                progress: ProgressFn | None = None, cache: OutputCache | None = None) -> tuple[np.ndarray, int]:
        """Model probabilities of every mask row: ``(float64 [N, C], model rows evaluated)``.

        Duplicate rows (and, for late-fusion models, duplicate half-masks) are evaluated
        once. Audio is composed batch by batch on the model's device, so memory holds one
        batch of perturbed audio at a time. With a ``cache``, masks it already holds are
        not evaluated again; the returned count is then of new rows only.
        """
        model = self.model
        if int(model.sample_rate) != af.sample_rate:
            raise ValueError(f"sample-rate mismatch: the audio factorization is at {af.sample_rate} Hz, "
                             f"the model expects {model.sample_rate} Hz; resample the audio first")
        n_audio = af.n_features
        if masks.shape[1] != n_audio + lf.n_features:
            raise InputError("bad_mask_shape", f"masks have {masks.shape[1]} columns, expected "
                                               f"{n_audio} audio + {lf.n_features} lyrics")
        device = model_device(model)
        if device is not None and device != af.device:
            af = af.to(device)
        size = auto_batch_size(device or af.device) if self.batch_size == "auto" else int(self.batch_size)
        batcher = _Batcher(size)
        n_classes = len(model.classes)
        cache = OutputCache() if cache is None else cache
        before = cache.rows_computed
        with torch.inference_mode():
            if self.late_fusion:
                probs = self._predict_late_fusion(model, af, lf, masks, batcher, n_classes, progress, cache)
            else:
                uniq, inverse = unique_rows(masks)
                new = uniq[cache.missing("joint", uniq)]
                done = [0]

                def tick(k):
                    done[0] += k
                    if progress:
                        progress(done[0], len(new))

                parts = []
                for block in _batches(len(new), compose_rows(batcher.size, af.explained_length)):
                    audio = af.compose(new[block, :n_audio])
                    texts = lf.compose(new[block, n_audio:])
                    # the lambda runs inside batcher.run, within this iteration
                    parts += batcher.run(len(texts), lambda sl: as_probs(
                        model.predict_proba(audio[sl], texts[sl]), sl.stop - sl.start, n_classes), tick)  # noqa: B023
                if len(new):
                    cache.add("joint", new, np.concatenate(parts))
                probs = cache.gather("joint", uniq)[inverse]
        return probs, cache.rows_computed - before

    def _predict_late_fusion(self, model, af, lf, masks, batcher, n_classes, progress, cache):
        n_audio = af.n_features
        ua, ia = unique_rows(masks[:, :n_audio])
        ul, il = unique_rows(masks[:, n_audio:])
        ua_new, ul_new = ua[cache.missing("audio", ua)], ul[cache.missing("lyrics", ul)]
        total, done = len(ua_new) + len(ul_new), [0]

        def tick(k):
            done[0] += k
            if progress:
                progress(done[0], total)

        audio_parts = []
        for block in _batches(len(ua_new), compose_rows(batcher.size, af.explained_length)):
            audio = af.compose(ua_new[block])
            # the lambda runs inside batcher.run, within this iteration
            audio_parts += batcher.run(len(audio), lambda sl: as_embedding(
                model.embed_audio(audio[sl]), sl.stop - sl.start, "embed_audio"), tick)  # noqa: B023
        if audio_parts:
            cache.add("audio", ua_new, torch.cat(audio_parts))
        if has_mask_lyrics(model):
            lyr = lambda sl: model.embed_lyrics_masks(lf, ul_new[sl])  # noqa: E731
        else:
            lyr = lambda sl: model.embed_lyrics(lf.compose(ul_new[sl]))  # noqa: E731
        if len(ul_new):
            cache.add("lyrics", ul_new, torch.cat(batcher.run(len(ul_new), lambda sl: as_embedding(
                lyr(sl), sl.stop - sl.start, "embed_lyrics"), tick)))
        audio_emb, lyrics_emb = cache.gather("audio", ua), cache.gather("lyrics", ul)
        ia_t = torch.as_tensor(ia, device=audio_emb.device)
        il_t = torch.as_tensor(il, device=lyrics_emb.device)
        probs = [as_probs(model.head(audio_emb[ia_t[sl]], lyrics_emb[il_t[sl]]), sl.stop - sl.start, n_classes)
                 for sl in _batches(len(masks), HEAD_BATCH_SIZE)]
        return np.concatenate(probs)
