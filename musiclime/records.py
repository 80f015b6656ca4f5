"""The records that flow between the explain job's stages: light (numpy only), so the
writer, the planner and their tests import them without torch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the records stay light: these modules import torch
    from musiclime.explainer import Plan
    from musiclime.explanation import Explanation

AUDIO_NOT_USED = "audio_not_used"  # the flag of a track whose model never hears audio (decode)


@dataclass
class ErrorRecord:
    track_id: str
    catalogue_row: int
    stage: str
    error_type: str
    message: str
    attempt: int = 1
    content_key: str | None = None

    def row(self, invocation_id: str) -> dict[str, Any]:
        return dict(track_id=self.track_id, catalogue_row=self.catalogue_row, stage=self.stage,
                    error_type=self.error_type, message=self.message, attempt=self.attempt,
                    invocation_id=invocation_id, content_key=self.content_key)


@dataclass
class TrackAbout:
    """What the decode stage learnt of a track besides its audio and lyrics: written to
    ``tracks`` beside the weights."""
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    lyrics_source: str | None = None           # see musiclime.lyrics_sources
    decoder: str | None = None                 # e.g. ffmpeg:aac (null: no audio decoded)
    window_start_s: float = 0.0                # where the explained window starts in the track
    word_times: dict[str, list[float]] | None = None  # per lyric word, when it is sung (from window start)
    audio_path: str | None = None              # the audio file decoded, as the catalogue gave it
    audio_key: str | None = None               # musiclime.storage.version_key of that file when decoded

    def columns(self) -> dict[str, Any]:
        return dict(title=self.title, artist=self.artist, album=self.album, lyrics_source=self.lyrics_source,
                    decoder=self.decoder, window_start_s=self.window_start_s, audio_path=self.audio_path,
                    audio_key=self.audio_key)


@dataclass
class TrackInput:
    track_id: str
    catalogue_row: int
    seed: int
    lyrics: str
    sample_rate: int
    stems: np.ndarray | None          # float32 [n_stems, T]; None until separated (demucs)
    stem_names: tuple[str, ...]
    mix: np.ndarray | None = None     # float32 [T], kept only when a separator actor needs it
    true_label: str | None = None
    flags: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    about: TrackAbout | None = None   # what the decode stage learnt of the file (tags, window, lyrics source)
    separated: Any = None             # torch stems on the GPU stage's device, from a batched separation;
                                      # dropped before the track leaves the stage

    @property
    def audio_used(self) -> bool:
        """False when the stems are a silent stand-in: the model never hears audio."""
        return AUDIO_NOT_USED not in self.flags


@dataclass
class Predictions:
    """What the GPU stage hands the fit stage for one track: the plan's masks and the model's
    outputs on them, no audio. ``explanation``: under ``num_samples="auto"`` the surrogate
    the stopping rule already fitted (the fit stage writes it instead of fitting again)."""
    input: TrackInput            # stems and mix dropped: the fit needs no audio
    plan: Plan                   # musiclime.explainer.Plan: masks uint8 [N, n_features]
    probs: np.ndarray            # float [N, C]: the model's probabilities per mask row
    classes: list[str]
    model_rows: int              # model (or encoder) rows computed for this track
    model_id: str
    duration_s: float            # seconds of audio explained (0 for a text classifier)
    timings: dict[str, float] = field(default_factory=dict)
    explanation: Explanation | None = None
    windows: int = 1             # model windows per perturbed track (--window whole; 1 otherwise)


@dataclass
class TrackResult:
    track: dict[str, Any]
    explanations: object  # pyarrow.Table
    model_rows: int


