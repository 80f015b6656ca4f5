"""Plugin models for pipeline tests (copied onto PYTHONPATH as ``mlplugins``)."""
import os
import re
import time

import torch


class Stormy:
    """'stormy' when any segment of the audio is loud or the lyric says 'storm'."""
    classes = ["still", "stormy"]
    sample_rate = 16000

    def predict_proba(self, audio, lyrics):
        audio = torch.as_tensor(audio, dtype=torch.float32)
        n = audio.shape[1] // 10 * 10
        e = audio[:, :n].reshape(len(audio), 10, -1).pow(2).mean(-1).amax(-1)
        storm = torch.tensor([float("storm" in re.findall(r"\w+", s.lower())) for s in lyrics])
        p = torch.sigmoid(4.0 * e.double() / 0.25 + 3.0 * storm.double() - 3.5)
        return torch.stack([1 - p, p], 1).numpy()


def make():
    return Stormy()


class Broken(Stormy):
    def predict_proba(self, audio, lyrics):
        raise RuntimeError("this model always fails")


def broken():
    return Broken()


class Gated(Stormy):
    """Stormy, but once it has answered ``MLPLUGINS_GATE_AFTER`` calls it waits while the
    file ``MLPLUGINS_GATE`` exists: a run that is surely busy, however fast the machine."""

    def __init__(self):
        self.gate = os.environ.get("MLPLUGINS_GATE")
        self.after = int(os.environ.get("MLPLUGINS_GATE_AFTER", "0"))
        self.calls = 0

    def predict_proba(self, audio, lyrics):
        self.calls += 1
        while self.gate and self.calls > self.after and os.path.exists(self.gate):
            time.sleep(0.05)
        return super().predict_proba(audio, lyrics)


def gated():
    return Gated()
