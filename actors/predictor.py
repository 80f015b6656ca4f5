"""PredictorActor: loads the model once, pins each track's stems and lyrics on its device,
composes and evaluates the masks in large batches, and returns probabilities only."""
from __future__ import annotations

import os
import time
import types


class PredictorActor:
    """Args:
        model_spec: ``default``, a checkpoint directory or ``module:factory``; loaded here,
            in the actor (never shipped from the driver), so restarts reload it.
        num_samples, modality, n_segments, batch_size, design: the explainer's settings.
        labels, label_column: which labels the job explains; with ``num_samples="auto"``
            sampling stops once those labels' explanations are stable.
    """

    def __init__(self, model_spec: str, spec, modality: str, n_segments: int, device: str | None = None,
                 labels: str = "top1", label_column: str | None = None):
        import torch

        from musiclime.models.registry import load_model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(model_spec, device=self.device)
        self.model_id = model_hash(self.model, model_spec)
        self.n_segments, self.modality = n_segments, modality
        self.spec = spec  # ExplainerSpec: the fit stage builds the same explainer
        self.labels = types.SimpleNamespace(labels=labels, label_column=label_column)
        self.tracks_done = 0

    def info(self) -> dict:
        import resource
        return {"pid": os.getpid(), "device": self.device, "classes": list(self.model.classes),
                "sample_rate": int(self.model.sample_rate), "model_id": self.model_id, "tracks_done": self.tracks_done,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **rss_split_mb()}

    def predict(self, inp):
        """TrackInput (stems on the host) -> dict(plan, probs, ...), or the ErrorRecord passed in."""
        import torch

        from musiclime.errors import InputError
        from musiclime.factorization import AudioFactorization, LyricsFactorization
        from musiclime.stages import ErrorRecord
        if isinstance(inp, ErrorRecord):
            return inp
        t0 = time.perf_counter()
        try:
            stems = torch.tensor(inp.stems, device=self.device)  # pinned on the device (a copy: Ray gives read-only arrays)
            af = AudioFactorization(stems, inp.sample_rate, self.n_segments, inp.stem_names)
            lf = LyricsFactorization(inp.lyrics)
            explainer = self.spec.build(inp.seed)
            stability = None
            if explainer.adaptive:
                from musiclime.stages import label_indices
                classes = list(self.model.classes)
                res = explainer.sample_until_stable(
                    self.model, af, lf, lambda p0: label_indices(self.labels, classes, p0, inp.true_label),
                    top_labels=None, modality=self.modality)
                plan, probs = res.plan, res.probs
                rows, stability = res.explanation.model_rows, res.explanation.stability
            else:
                plan = explainer.plan(af, lf, self.modality)                  # masks: numpy, CPU, from the seed
                probs, rows = explainer.predict(self.model, af, lf, plan.masks)
        except InputError as e:
            return ErrorRecord(inp.track_id, inp.catalogue_row, "predict", e.code, f"track {inp.track_id!r}: {e.message}")
        self.tracks_done += 1
        inp.stems = None  # the fit stage needs no audio: keep the object store light
        inp.mix = None
        return {"input": inp, "plan": plan, "probs": probs, "model_rows": rows, "stability": stability,
                "classes": list(self.model.classes),
                "model_id": self.model_id, "duration_s": af.explained_length / af.sample_rate,
                "timings": {"predict_s": time.perf_counter() - t0}}


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
        src = inspect.getsource(inspect.getmodule(type(model)))
    except (TypeError, OSError):
        src = spec
    return hashlib.sha256(src.encode()).hexdigest()
