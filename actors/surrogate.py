"""SurrogateActor: fits the surrogates of predicted tracks on a CPU worker."""
from __future__ import annotations


class SurrogateActor:
    def __init__(self, cfg, invocation_id: str):
        self.cfg, self.invocation_id = cfg, invocation_id

    def fit(self, pred):
        from musiclime.stages import fit
        return fit(pred, self.cfg, self.invocation_id)
