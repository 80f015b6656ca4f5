"""The reference MusicLIME loop, written like the paper's notebooks, as a speed baseline.

Per mask: numpy zeros, add each kept stem-segment, lime's ``inverse_removing`` for the
lyrics; the model is called every 10 masks; lime's ``LimeBase`` fits the surrogate.
"""
from __future__ import annotations

import numpy as np
import sklearn.metrics
import torch


def reference_explain(model, stems: np.ndarray, n_segments: int, text: str, num_samples: int = 1000,
                      label: int = 0, batch_size: int = 10, seed: int = 0):
    from lime.lime_base import LimeBase
    from lime.lime_text import IndexedString
    n_stems, n = stems.shape
    seg_len = n // n_segments
    idx = IndexedString(text, bow=True, split_expression=r"\W+")
    n_audio, n_words = n_stems * n_segments, idx.num_words()
    rng = np.random.RandomState(seed)
    data = rng.randint(0, 2, num_samples * (n_audio + n_words)).reshape(num_samples, n_audio + n_words)
    data[0, :] = 1
    probs, audios, texts = [], [], []
    for row in data:
        audio = np.zeros(seg_len * n_segments, dtype=np.float32)
        for f in np.nonzero(row[:n_audio])[0]:
            seg, stem = divmod(f, n_stems)
            audio[seg * seg_len:(seg + 1) * seg_len] += stems[stem, seg * seg_len:(seg + 1) * seg_len]
        audios.append(audio)
        texts.append(idx.inverse_removing(np.nonzero(row[n_audio:] == 0)[0]))
        if len(audios) == batch_size:
            probs.append(np.asarray(model.predict_proba(torch.from_numpy(np.stack(audios)), texts)))
            audios, texts = [], []
    if audios:
        probs.append(np.asarray(model.predict_proba(torch.from_numpy(np.stack(audios)), texts)))
    labels = np.concatenate(probs)
    distances = sklearn.metrics.pairwise_distances(data, data[0].reshape(1, -1), metric="cosine").ravel()
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 25 ** 2)))
    return base.explain_instance_with_data(data, labels, distances, label, data.shape[1])
