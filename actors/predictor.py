"""PredictorActor: the Ray actor around the GPU stage (:class:`musiclime.gpu_stage.ExplainStage`),
one per device (or a fraction of one): the model loads once per actor life, and each call
separates (demucs) and explains one track there, returning probabilities only."""
from __future__ import annotations

import ray

from musiclime.gpu_stage import ExplainStage

# ``info`` and ``heartbeat`` run in their own thread, so they answer while a track is being
# explained: the driver's stall deadline is judged per model batch, not per track.
PROBE_GROUP = {"probe": 1}


class PredictorActor:
    """Args: those of :class:`~musiclime.gpu_stage.ExplainStage`. Create it with
    ``concurrency_groups=PROBE_GROUP``."""

    def __init__(self, *args, **kwargs):
        self.stage = ExplainStage(*args, **kwargs)

    @ray.method(concurrency_group="probe")
    def info(self) -> dict:
        import torch
        return {**self.stage.info(), "node_id": ray.get_runtime_context().get_node_id(),
                "torch_threads": torch.get_num_threads()}

    @ray.method(concurrency_group="probe")
    def heartbeat(self) -> tuple[str | None, float | None]:
        return self.stage.heartbeat()

    def predict(self, decoded: list, ahead: list | None = None):
        """``[refs to TrackInputs]`` (stems on the host, or a mix to separate here) -> one
        :class:`~musiclime.records.Predictions` (or the ErrorRecord passed in) per track:
        the value itself for one track, a tuple for several (call it with
        ``num_returns=len(decoded)``: each track's result is its own ref, so a fit, a
        retry or an error row is per track whatever the call carried).

        The decoded tracks come as refs inside a list, so Ray sends the call at once and
        this actor fetches them itself: a call waiting for its decode would otherwise hold
        back every later call from the driver, the heartbeat included.

        ``ahead``: refs to the decoded tracks of the calls that follow this one here (its
        group): separated with this call's tracks in one batch, into the stem cache. One
        that failed to decode is skipped: its own call reports it."""
        neighbours = []
        for ref in ahead or ():
            try:
                neighbours.append(ray.get(ref))
            except Exception:
                continue
        out = self.stage.explain_batch(ray.get(decoded), ahead=neighbours)
        return out[0] if len(out) == 1 else tuple(out)
