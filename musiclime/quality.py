"""Explanation quality against planted ground truth (the demo library's)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from musiclime.explanation import AUDIO, LYRICS, Explanation


@dataclass(frozen=True)
class Planted:
    """The planted evidence of one track for one label."""
    audio: frozenset   # {(stem, segment)}
    words: frozenset   # {token}

    def contains(self, modality: str, name: str, n_segments: int) -> bool:
        if modality == LYRICS:
            return name in self.words
        stem, _, seg = name.rpartition("@")
        return (stem, int(seg)) in self.audio


def planted_by_track(truth_rows: list[dict], task: str, n_segments: int = 10) -> dict[str, Planted]:
    """Ground-truth rows (``ground_truth.parquet``) -> ``{track_id: Planted}`` for ``task``.
    A row without a segment plants its stem in every segment."""
    audio: defaultdict[str, set] = defaultdict(set)
    words: defaultdict[str, set] = defaultdict(set)
    for r in truth_rows:
        if r["task"] != task:
            continue
        if r["modality"] == AUDIO:
            segs = [r["segment"]] if r["segment"] is not None else range(n_segments)
            audio[r["track_id"]].update((r["stem"], int(s)) for s in segs)
        else:
            words[r["track_id"]].add(r["token"])
    return {t: Planted(frozenset(audio[t]), frozenset(words[t])) for t in set(audio) | set(words)}


def precision_at_k(exp: Explanation, label: int, planted: Planted, k: int = 5,
                   rank: str = "support") -> dict:
    """Hits among the top ``min(k, n planted)`` features overall, and per modality among
    that modality's top ``min(k, n planted there)`` (a track with 3 planted words is
    judged on its top 3 words: precision can reach 1 whatever the track).

    ``rank="support"`` orders features by signed weight, most supporting the label first:
    planted evidence is evidence *for* the label, and a feature that pushes the
    prediction away from it is not a miss of the planted truth. ``rank="abs"`` orders by
    |weight| (lime's ``as_list`` order), which also counts strong counter-evidence.
    """
    if rank not in ("support", "abs"):
        raise ValueError(f"rank must be 'support' or 'abs', got {rank!r}")
    ranked = exp.as_list(label)
    if rank == "support":
        ranked = sorted(ranked, key=lambda t: -t[2])
    n_seg = exp.features.n_segments
    k_all = min(k, len(planted.audio) + len(planted.words), len(ranked))
    out = {"overall": (sum(planted.contains(m, f, n_seg) for m, f, _ in ranked[:k_all]), k_all)} if k_all else {}
    out.update(_level_hits(exp, label, planted, rank))
    for modality, n_planted in ((AUDIO, len(planted.audio)), (LYRICS, len(planted.words))):
        kk = min(k, n_planted)
        if kk == 0:
            continue
        top = [(m, f) for m, f, _ in ranked if m == modality][:kk]
        out[modality] = (sum(planted.contains(m, f, n_seg) for m, f in top), kk)
    return out


def _level_hits(exp: Explanation, label: int, planted: Planted, rank: str) -> dict:
    """Stems and segments: the audio weights summed per stem (per segment), ranked, and
    the top ``n planted`` checked. A level whose every value is planted (the emotion pad
    plays in all segments) says nothing and is left out."""
    m = exp.stem_segment_matrix(label)  # [n_stems, n_segments]
    stems = exp.features.stem_names
    out = {}
    for key, totals, truth, names in (
            ("stem", m.sum(axis=1), {s for s, _ in planted.audio}, list(stems)),
            ("segment", m.sum(axis=0), {k for _, k in planted.audio}, list(range(m.shape[1])))):
        if not truth or len(truth) == len(names):
            continue
        score = totals if rank == "support" else abs(totals)
        order = sorted(range(len(names)), key=lambda i: -score[i])
        out[key] = (sum(names[i] in truth for i in order[:len(truth)]), len(truth))
    return out


def pooled_precision(per_track: list[dict]) -> dict[str, float]:
    """Sum of hits / sum of k across tracks, per key."""
    hits: defaultdict[str, int] = defaultdict(int)
    ks: defaultdict[str, int] = defaultdict(int)
    for d in per_track:
        for key, (h, k) in d.items():
            hits[key] += h
            ks[key] += k
    return {key: hits[key] / ks[key] for key in ks if ks[key]}
