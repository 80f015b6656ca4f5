"""Plugin models for pipeline tests (copied onto PYTHONPATH as ``mlplugins``)."""
import re

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
