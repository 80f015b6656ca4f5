"""The ``explanations`` table: one row per track x explained label x selected feature."""
from __future__ import annotations

import pyarrow as pa

from schemas._fields import field, schema

LOCAL_FIELDS = [
    field("label", pa.string(), "explained class name", nullable=False),
    field("label_index", pa.int32(), "explained class index in the model's classes", nullable=False),
    field("modality", pa.string(), "'audio' or 'lyrics'", nullable=False),
    field("feature", pa.string(), "feature name: 'stem@segment' for audio, the word for lyrics", nullable=False),
    field("stem", pa.string(), "stem name (audio only; 'mix' for a time-only factorization)"),
    field("segment", pa.int32(), "segment index, 0-based (audio only)"),
    field("start_s", pa.float64(), "segment start in seconds from the explained window's start (audio only)"),
    field("end_s", pa.float64(), "segment end in seconds (audio only)"),
    field("token", pa.string(), "the word as it appears in the lyrics (lyrics only)"),
    field("token_index", pa.int32(), "position of the word's first occurrence among the lyric's words (lyrics only)"),
    field("weight", pa.float64(), "surrogate (Ridge) coefficient: change in the label's probability (or log-odds: "
          "tracks.target) when the feature is kept", nullable=False),
    field("weight_se", pa.float64(), "standard error of the weight: cluster-robust sandwich over the design's "
          "independent draws (README 'Error bars'); null where the samples cannot tell"),
    field("rank", pa.int32(), "1 = largest |weight| within the track and label", nullable=False),
]

LOCAL_SCHEMA = schema(LOCAL_FIELDS, "Local MusicLIME weights of one track (Explanation.to_arrow).")
