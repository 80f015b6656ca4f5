"""The ``global_importance`` table written by ``musiclime aggregate``."""
from __future__ import annotations

import pyarrow as pa

from schemas._fields import field, schema

GLOBAL_IMPORTANCE = schema([
    field("label", pa.string(), "class name", nullable=False),
    field("label_source", pa.string(), "'predicted' (tracks the model predicted as the class) or 'true' (catalogue label)", nullable=False),
    field("level", pa.string(), "stem | segment | stem_segment | word | modality", nullable=False),
    field("modality", pa.string(), "'audio' or 'lyrics'"),
    field("stem", pa.string(), "stem name (levels stem, stem_segment)"),
    field("segment", pa.int32(), "segment index (levels segment, stem_segment)"),
    field("token", pa.string(), "lower-cased word (level word)"),
    field("mean_abs_weight", pa.float64(), "global average importance: mean over the class's tracks of the track's "
                                           "|weight| (summed over the level's features); words: over tracks containing the word"),
    field("mean_weight", pa.float64(), "the same with signed weights"),
    field("mean_weight_se", pa.float64(), "standard error of mean_weight from the local fits' weight_se (their "
          "sampling error only, tracks independent, a level's features summed as independent): "
          "sqrt(sum weight_se^2) / n_tracks; null where an explanation has no weight_se (older releases) "
          "and for level modality"),
    field("n_tracks", pa.int64(), "tracks averaged over"),
    field("topk_frequency", pa.float64(), "share of those tracks where a feature of the row is among the track's top-k"),
    field("share_mean", pa.float64(), "level modality: mean share of sum |weight| on this modality"),
    field("share_q25", pa.float64(), "level modality: first quartile of the per-track share"),
    field("share_q50", pa.float64(), "level modality: median per-track share"),
    field("share_q75", pa.float64(), "level modality: third quartile of the per-track share"),
    field("model_id", pa.string(), "hash of the model whose explanations are aggregated"),
    field("config_hash", pa.string(), "config hash of those explanations (tracks.config_hash); with model_id and "
                                      "the run_id partition (the night covered, or the run with --runs) it says "
                                      "what the rows cover"),
], "Global MusicLIME importances per class, aggregated from local explanations.")
