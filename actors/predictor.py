"""PredictorActor: the Ray actor around the GPU stage (:class:`musiclime.gpu_stage.ExplainStage`),
one per device (or a fraction of one): the model loads once per actor life, and each call
separates (demucs) and explains one track there, returning probabilities only."""
from __future__ import annotations

from musiclime.gpu_stage import ExplainStage


class PredictorActor:
    """Args: those of :class:`~musiclime.gpu_stage.ExplainStage`."""

    def __init__(self, *args, **kwargs):
        self.stage = ExplainStage(*args, **kwargs)

    def info(self) -> dict:
        import ray
        return {**self.stage.info(), "node_id": ray.get_runtime_context().get_node_id()}

    def predict(self, inp):
        """TrackInput (stems on the host, or a mix to separate here) -> dict(plan, probs, ...),
        or the ErrorRecord passed in."""
        return self.stage(inp)
