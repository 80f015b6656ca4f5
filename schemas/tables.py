"""Arrow schemas of every table musiclime writes, with field docs in the metadata.

All tables are hive-partitioned on disk by ``run_id=<id>/`` only; the partition column is
not stored inside the files (readers add it back from the path)."""
from __future__ import annotations

import pyarrow as pa

from schemas._fields import field, schema
from schemas.explanations import LOCAL_FIELDS

TRACK_ID = field("track_id", pa.string(), "the catalogue's track id (data only, never a path)", nullable=False)
CONTENT_KEY = field("content_key", pa.string(), "32 hex digits: what decides 'unchanged' for incremental nights "
                    "(the catalogue's checksum column, else size and modification time of the track's audio, "
                    "stem and lyrics files, plus inline lyrics and the label column; see README)")
CATALOGUE_ROW = field("catalogue_row", pa.int64(), "0-based row of the track in the catalogue", nullable=False)

LABEL_FIT = pa.struct([
    pa.field("label", pa.string()), pa.field("label_index", pa.int32()),
    pa.field("score", pa.float64()), pa.field("intercept", pa.float64()), pa.field("local_pred", pa.float64()),
    pa.field("audio_share", pa.float64()), pa.field("lyrics_share", pa.float64()),
])
TIMINGS = pa.struct([pa.field(n, pa.float64()) for n in ("decode_s", "separate_s", "predict_s", "fit_s")])

TRACKS = schema([
    TRACK_ID, CATALOGUE_ROW,
    field("seed", pa.int64(), "mask seed of the track: blake2b('{run seed}:{track_id}'), 8 bytes little-endian "
          "read as a signed int64 (no unsigned types in warehouses); the explainer takes it as is "
          "(MusicLIME(seed=...) reads a negative value as its uint64 twin)", nullable=False),
    field("predicted", pa.string(), "the model's most probable class on the whole input", nullable=False),
    field("probabilities", pa.list_(pa.float64()), "class probabilities in the order of run.json 'classes'", nullable=False),
    field("true_label", pa.string(), "the catalogue's label (--label-column), if any"),
    field("explained_labels", pa.list_(pa.string()), "classes explained, primary first", nullable=False),
    field("score", pa.float64(), "weighted R^2 of the primary label's surrogate"),
    field("intercept", pa.float64(), "surrogate intercept (primary label)"),
    field("local_pred", pa.float64(), "surrogate prediction for the whole input (primary label), in the units of target: compare with its probability, or its log-odds"),
    field("audio_share", pa.float64(), "share of sum |weight| on audio features (primary label)"),
    field("lyrics_share", pa.float64(), "share of sum |weight| on lyrics features (primary label)"),
    field("label_fits", pa.list_(LABEL_FIT), "the same fit numbers for every explained label"),
    field("n_samples", pa.int32(), "perturbations drawn, the whole input included"),
    field("model_rows", pa.int32(), "rows the model evaluated (distinct perturbations or half-masks)"),
    field("design", pa.string(), "sampling design: iid | foldover | grid | orthogonal | orthogonal-grid | "
          "orthogonal-cross"),
    field("target", pa.string(), "what the surrogates fitted: probability | log_odds"),
    field("topk_resolved", pa.bool_(), "every explained label's top-10 is separated from the 11th with 95% "
                                       "confidence (weights and weight_se of the written surrogate)"),
    field("topk_separation", pa.float64(), "smallest gap between a label's 10th and 11th |weight|, in standard "
                                           "errors of the gap (null: cannot tell)"),
    field("n_features", pa.int32(), "audio + lyrics features of the track"),
    field("n_audio_features", pa.int32(), "stems x segments"),
    field("n_lyrics_features", pa.int32(), "distinct words"),
    field("duration_s", pa.float64(), "explained audio length in seconds"),
    field("modality", pa.string(), "perturbed modality: both | audio | lyrics"),
    field("separator", pa.string(), "hpss | demucs | provided | none"),
    field("model_id", pa.string(), "hash of the model checkpoint (or plugin source)"),
    field("config_hash", pa.string(), "hash of the settings that decide the numbers (run.json 'settings'), "
                                      "the model hash included: equal hashes, comparable weights"),
    field("timings", TIMINGS, "seconds per stage for this track"),
    field("status", pa.string(), "'ok'", nullable=False),
    field("flags", pa.list_(pa.string()), "input notes: resampled, downmixed, cropped, cropped_to_model, truncated (the file ends before its header says), no_lyrics, lyrics_truncated, lyrics_windowed (synced lyrics cut to the window), lyrics_recoded (a lyrics file not in UTF-8), tag_truncated, tags_unreadable, audio_not_used (a text classifier: the audio was not read)"),
    field("invocation_id", pa.string(), "which invocation of the run computed the track (resumes keep earlier ones)"),
    CONTENT_KEY,
    field("title", pa.string(), "the catalogue's title column where it has one, else the file's title tag "
          "(cleaned, capped: flag tag_truncated)"),
    field("artist", pa.string(), "the catalogue's artist column, else the file's artist tag (the first when several)"),
    field("album", pa.string(), "the catalogue's album column, else the file's album tag"),
    field("lyrics_source", pa.string(), "where the lyrics came from: catalogue | lrc | text_file | tag_synced | tag "
          "(null: no lyrics); docs/library.md has the precedence"),
    field("decoder", pa.string(), "the decoder of the audio, e.g. ffmpeg:aac (run.json 'decoder' has its version)"),
    field("windows", pa.int32(), "model windows each perturbation was heard in: 1, or under --window whole the "
          "consecutive windows of the model's input length whose mean probabilities are the track's prediction"),
    field("window_start_s", pa.float64(), "where the explained window starts in the track, seconds (explanations' "
          "start_s/end_s and sung_at_s are relative to it)"),
    field("audio_path", pa.string(), "the audio file the track was explained from, as the catalogue gave it "
          "(null: none decoded, e.g. provided stems or a text classifier)"),
    field("audio_key", pa.string(), "32 hex digits of that file's size and modification time when it was decoded: "
          "musiclime serve plays the file only while they still match"),
    field("lyrics", pa.string(), "the lyrics as explained (after synced-lyrics windowing and the word cap): the "
          "text the lyrics weights colour (null: none)"),
], "One row per explained track.")

SUNG_AT = field("sung_at_s", pa.list_(pa.float64()), "when the word is sung inside the explained window, seconds "
                "from its start (time-synced lyrics under --lyrics-window on; null otherwise)")
EXPLANATIONS = schema([TRACK_ID] + LOCAL_FIELDS + [SUNG_AT],
                      "One row per track x explained label x feature (the local MusicLIME weights).")

ERRORS = schema([
    TRACK_ID, CATALOGUE_ROW,
    field("stage", pa.string(), "catalogue | validate | decode | separate | predict | fit", nullable=False),
    field("error_type", pa.string(), "e.g. catalogue_decode_error, missing_track_id, duplicate_track_id, "
                                     "missing_file, unreadable_file (storage refused: access, bad URI), "
                                     "decode_error, encrypted (DRM-protected MP4 audio), no_audio_stream (a media file without "
                                     "audio, e.g. a video-only MP4), empty_audio, silent_audio, too_short, "
                                     "lyrics_decode_error, stem_mismatch, worker_crash (the track took its "
                                     "worker down 3 times alone), timeout (it stalled its predictor twice)", nullable=False),
    field("message", pa.string(), "what went wrong, naming the track's input"),
    field("attempt", pa.int32(), "attempts made before giving up (1 = bad input, not retried)"),
    field("invocation_id", pa.string(), "which invocation of the run recorded the error"),
    CONTENT_KEY,
], "One row per catalogue row that could not be explained.")

MEMBERS = schema([
    field("track_id", pa.string(), "the catalogue's track id (null: the row has none)"),
    CATALOGUE_ROW, CONTENT_KEY,
], "One row per catalogue row a run was given: the night's catalogue, which aggregate and report "
   "cover by default (removed tracks are absent from later nights' members).")

ALL = {"tracks": TRACKS, "explanations": EXPLANATIONS, "errors": ERRORS, "members": MEMBERS}
