"""The GPU stage: one per device. It takes a decoded track, separates it (demucs, through the
stem cache) when its stems are not there yet, and explains it on the same device: demucs'
stems go to mask composition without leaving the device (only the cache write copies them
to the host). Without a GPU the same stage runs on CPU.

Plain Python, no Ray: ``actors.PredictorActor`` wraps it for the job, and a benchmark can
run it on a machine without Ray.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

from musiclime.records import ErrorRecord, Predictions, TrackInput


class ExplainStage:
    """Args:
        model_spec: ``default``, a checkpoint directory or ``module:factory``; loaded here
            (never shipped), so a restarted actor reloads it.
        spec: the :class:`~musiclime.explainer.ExplainerSpec` the fit stage uses too.
        modality, n_segments: what is explained and into how many segments audio is cut.
        device: ``cuda`` / ``cpu`` (None: cuda when there is one).
        labels, label_column: which labels; with ``num_samples="auto"`` sampling stops once
            those labels' explanations are stable.
        separator: None, or ``(name, options, cache_dir)`` to separate on this device the
            tracks that arrive with a mix and no stems (demucs).
        precision: ``auto`` | ``fp32`` | ``fp16`` | ``bf16``: autocast of the model's forward
            passes on CUDA (auto: bf16 where the GPU has it, else fp16); CPU runs fp32.
        window: ``middle``, or ``whole``: the model's prediction of a track is the mean over
            consecutive windows of its input length (:class:`musiclime.whole_track.WholeTrack`).
        model_window: the model's input length in seconds when the registry knows it (else
            the model's ``window_seconds``, if it declares one).
        compile: ``off`` | ``on`` | ``graphs``: ``torch.compile`` of the model's tensor parts,
            ``graphs`` with CUDA graphs (:mod:`musiclime.accelerate`).
    """

    def __init__(self, model_spec: str, spec, modality: str, n_segments: int, device: str | None = None,
                 labels: str = "top1", label_column: str | None = None,
                 separator: tuple[str, dict, str] | None = None, precision: str = "auto",
                 window: str = "middle", model_window: float | None = None, compile: str = "off"):
        import torch

        from musiclime.accelerate import compile_model
        from musiclime.models.registry import load_model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_spec, device=self.device)
        self.model_id = model_hash(self.model, model_spec)
        self.compiled = compile_model(self.model, compile)
        self.window_seconds = model_window or getattr(self.model, "window_seconds", None)
        self.heard = self.model  # what the explainer calls: the model, or the model over whole tracks
        if window == "whole" and self.window_seconds:
            from musiclime.runner import auto_batch_size
            from musiclime.whole_track import WholeTrack
            self.heard = WholeTrack(self.model, self.window_seconds, auto_batch_size(self.device))
        self.precision = precision
        self.n_segments, self.modality = n_segments, modality
        self.spec = spec
        from musiclime.stages import LabelRule
        self.labels = LabelRule(labels, label_column)
        self.separator = self.cache = None
        if separator is not None:
            from musiclime.separation import StemCache, get_separator
            name, options, cache_dir = separator
            if name == "demucs":  # bf16 where the model runs bf16 and the stems stay close to fp32
                options = {"precision": "fp32" if precision in ("fp32", "fp16") else "auto", **options}
            self.separator = get_separator(name, **{**options, "device": self.device})
            self.cache = StemCache(cache_dir)
        self.tracks_done = 0
        self.separated_ahead = 0  # tracks separated for the calls that follow (explain_batch's ahead)
        self.current: str | None = None  # see heartbeat()
        self.last_beat = time.monotonic()
        self.busy_s = 0.0
        self.started = time.monotonic()

    def info(self) -> dict:
        import resource
        return {"pid": os.getpid(), "device": self.device, "classes": list(self.model.classes),
                "sample_rate": int(self.model.sample_rate), "model_id": self.model_id, "tracks_done": self.tracks_done,
                "window_seconds": self.window_seconds,
                "busy_s": self.busy_s, "up_s": time.monotonic() - self.started,
                "busy_share": self.busy_s / max(time.monotonic() - self.started, 1e-9),
                "cache": None if self.cache is None else {"hits": self.cache.hits, "misses": self.cache.misses},
                "compiled": self.compiled, "separated_ahead": self.separated_ahead,
                "separation_precision": getattr(self.separator, "precision", None),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **rss_split_mb()}

    def heartbeat(self) -> tuple[str | None, float | None]:
        """``(track id being explained, seconds since it last finished a model batch)``, or
        ``(None, None)`` between tracks: a caller that sees the seconds grow knows this stage
        is stuck on that track (a long track that keeps finishing batches is not)."""
        track = self.current
        return (track, time.monotonic() - self.last_beat) if track is not None else (None, None)

    def _beat(self, *_) -> None:
        self.last_beat = time.monotonic()

    def _stems(self, inp: TrackInput):
        """The track's stems as a float32 tensor [n_stems, T] on this device."""
        from musiclime.accelerate import to_device
        if inp.stems is not None:
            return to_device(inp.stems, self.device)
        if inp.separated is not None:  # by explain_batch, with the call's other tracks
            return inp.separated
        if self.separator is None or self.cache is None:
            raise RuntimeError(f"track {inp.track_id!r} has no stems and this stage has no separator")
        t0 = time.perf_counter()
        stems, _ = self.cache.separate(self.separator, inp.mix, inp.sample_rate, device=self.device)
        inp.timings["separate_s"] = time.perf_counter() - t0
        return stems

    def __call__(self, inp: TrackInput | ErrorRecord) -> Predictions | ErrorRecord:
        """A decoded track -> its :class:`Predictions` for the fit stage, or an
        :class:`ErrorRecord` (the one passed in, or this track's input error)."""
        from musiclime.errors import InputError
        from musiclime.factorization import AudioFactorization, LyricsFactorization
        if isinstance(inp, ErrorRecord):
            return inp
        t0 = time.perf_counter()
        stage = "separate"
        self._beat()
        self.current = inp.track_id
        try:
            stems = self._stems(inp)
            self._beat()
            stage = "predict"
            t1 = time.perf_counter()
            af = AudioFactorization(stems, inp.sample_rate, self.n_segments, inp.stem_names,
                                    allow_silent=not inp.audio_used)
            lf = LyricsFactorization(inp.lyrics)
            explainer = self.spec.build(inp.seed)
            with self.autocast():
                return self._explain(inp, af, lf, explainer, t1)
        except InputError as e:
            return ErrorRecord(inp.track_id, inp.catalogue_row, stage, e.code, f"track {inp.track_id!r}: {e.message}")
        finally:
            self.busy_s += time.perf_counter() - t0
            self.current = None

    def explain_batch(self, inputs: list[TrackInput | ErrorRecord],
                      ahead: Sequence[TrackInput | ErrorRecord] = ()) -> list[Predictions | ErrorRecord]:
        """Several decoded tracks -> one result each, in order. The tracks that need
        separating, these and those ``ahead`` (the tracks of the calls that follow, whose
        stems this only caches), are separated in one batched call; then each track is
        explained on its own (the heartbeat names it); a bad track is its own error row."""
        self._separate_together(list(inputs), list(ahead))
        return [self(inp) for inp in inputs]

    def _separate_together(self, inputs: list, ahead: list) -> None:
        """The stems of every track that needs separating, in one batched call. Should the
        batch fail, each track is separated alone in its own turn, so a track that cannot be
        separated fails alone."""
        def needs(inp):
            return isinstance(inp, TrackInput) and inp.stems is None and inp.mix is not None
        todo = [inp for inp in inputs + ahead if needs(inp)]
        if len(todo) < 2 or self.separator is None or self.cache is None:
            return
        self._beat()
        self.current = next((inp.track_id for inp in inputs if needs(inp)), todo[0].track_id)
        t0 = time.perf_counter()
        try:
            found = self.cache.separate_many(self.separator, [inp.mix for inp in todo], todo[0].sample_rate,
                                             device=self.device)
        except Exception:
            return
        finally:
            self.current = None
        self.separated_ahead += sum(1 for inp in ahead if needs(inp))
        share = (time.perf_counter() - t0) / len(todo)
        for inp, (stems, _hit) in zip(todo, found):
            inp.separated = stems
            inp.timings["separate_s"] = share

    def autocast(self):
        """The forward passes' precision on CUDA (a no-op context on CPU or with fp32)."""
        return self.autocast_for(self.device, self.precision)

    @staticmethod
    def autocast_for(device, precision: str):
        """:meth:`autocast` of a stage on ``device`` with ``precision``."""
        import contextlib

        import torch
        if not str(device).startswith("cuda") or precision == "fp32":
            return contextlib.nullcontext()
        bf16 = precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)

    def _explain(self, inp: TrackInput, af, lf, explainer, t1: float) -> Predictions:
        from musiclime.stages import label_indices
        classes = list(self.model.classes)
        ev = explainer.evaluate(self.heard, af, lf, lambda p0: label_indices(self.labels, classes, p0, inp.true_label),
                                top_labels=None, modality=self.modality, progress=self._beat)
        self.tracks_done += 1
        inp.stems = None  # the fit stage needs no audio: keep the object store light
        inp.mix = inp.separated = None
        return Predictions(input=inp, plan=ev.plan, probs=ev.probs, model_rows=ev.model_rows, classes=classes,
                           model_id=self.model_id,
                           duration_s=af.explained_length / af.sample_rate if inp.audio_used else 0.0,
                           timings={"predict_s": time.perf_counter() - t1}, explanation=ev.explanation,
                           windows=self.heard.windows(af.explained_length) if hasattr(self.heard, "windows") else 1)


def rss_split_mb() -> dict:
    """Resident memory now, split (Linux): private (``rss_anon_mb``) and shared
    (``rss_shmem_mb``: mostly Ray object-store pages the actor wrote results into, which
    count in its RSS but belong to the store)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssShmem"):
                    out["rss_anon_mb" if key == "RssAnon" else "rss_shmem_mb"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def model_hash(model, spec: str) -> str:
    """The checkpoint hash, or for a plugin the hash of its module's source."""
    import hashlib
    import inspect
    mid = getattr(model, "model_id", None)
    if mid:
        return str(mid)
    try:
        module = inspect.getmodule(type(model))
        if module is None:
            raise TypeError("no module")
        src = inspect.getsource(module)
    except (TypeError, OSError):
        src = spec
    return hashlib.sha256(src.encode()).hexdigest()
