"""The explain job's configuration: one frozen object, stored in run.json."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from musiclime.choices import Choice

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the whole string: see check_run_id


class Separator(Choice):
    HPSS = "hpss"
    DEMUCS = "demucs"
    PROVIDED = "provided"
    NONE = "none"


class Labels(Choice):
    TOP1 = "top1"
    TRUE = "true"
    ALL = "all"


class Precision(Choice):
    AUTO = "auto"  # bf16 autocast on a GPU that has it, else fp16; fp32 on CPU
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class OutputFormat(Choice):
    AUTO = "auto"        # delta on object stores, parquet on local and NFS paths
    PARQUET = "parquet"  # hive-partitioned Parquet files, committed by rename
    DELTA = "delta"      # Delta tables, committed with application transactions (no rename)


# The settings that change a run's numbers (see ExplainConfig.settings).
RESULT_SETTINGS = ("seed", "num_samples", "design", "target", "segments", "modality", "labels", "label_column", "separator",
                   "max_seconds", "max_words", "feature_selection", "num_features", "kernel_width", "demucs_model")


def settings_diff(old: dict, new: dict) -> list[str]:
    """Human lines for every setting that differs (keys only one side has are skipped:
    a run's model hash is known only once the model loads)."""
    return [f"{k}: {old[k]!r} before, {new[k]!r} now" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


@dataclass(frozen=True)
class ExplainConfig:
    catalogue: str
    model: str
    out: str
    separator: str = "hpss"
    num_samples: int | str = 1000        # or "auto": sample until the top-k is resolved (MusicLIME)
    design: str = "auto"                 # "auto" or a name of musiclime.designs.DESIGNS
    target: str = "auto"                 # auto | probability | log_odds (musiclime.surrogate.Target)
    segments: int = 10
    labels: str = "top1"                 # top1 | true | all
    label_column: str | None = None
    modality: str = "both"
    seed: int = 0
    run_id: str | None = None
    address: str | None = "local"
    predictors: int | str = 1            # N, "MIN:MAX" (an elastic pool) or "auto" (follows the cluster)
    gpus_per_predictor: float = 0.0
    surrogate_workers: int = 1
    limit: int | None = None
    max_seconds: float = 30.0
    max_words: int = 1000                # distinct lyric words per track; more: truncated + flagged
    stem_cache: str | None = None
    demucs_model: str = "htdemucs"
    demucs_repo: str | None = None
    trust_pickle: bool = False
    batch_size: int | str = "auto"
    feature_selection: str = "auto"
    kernel_width: float = 25.0
    num_features: int | None = None
    commit_every: int = 64
    retry_errors: bool = False
    max_attempts: int = 3
    tracks_in_flight: int | None = None   # default: 2 per predictor + 2
    lease_timeout: float = 60.0           # seconds without a heartbeat before another driver may take over
    status_every: float = 30.0            # seconds between status lines when stderr is not a terminal
    stall_timeout: float = 1800.0         # a predictor holding tracks that finishes none for this long is replaced
    format: str = "auto"                  # OutputFormat; a standing output keeps the format it has
    precision: str = "auto"               # Precision of the model's forward passes on a GPU (autocast)
    model_window: float | None = None     # seconds of audio the model sees (set from the model, e.g. AST 10.24)
    audio_used: bool = True               # False for a model that never hears audio (a text classifier)
    incremental: bool = False             # explain only rows whose content key has no explanation yet
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Every option is checked here, once: a bad value from the CLI or from Python is a
        ValueError (exit 2) before any catalogue is read or Ray is started."""
        from musiclime.designs import CHOICES as DESIGN_CHOICES
        from musiclime.masks import Modality
        from musiclime.surrogate import FeatureSelection, Target
        Separator.parse(self.separator)
        OutputFormat.parse(self.format)
        Precision.parse(self.precision)
        Labels.parse(self.labels)
        Modality.parse(self.modality)
        if self.design not in DESIGN_CHOICES:
            raise ValueError(f"design must be one of {', '.join(DESIGN_CHOICES)}, got {self.design!r}")
        Target.parse(self.target)
        FeatureSelection.parse(self.feature_selection)
        if self.num_samples != "auto" and not (isinstance(self.num_samples, int) and self.num_samples >= 2):
            raise ValueError(f"num_samples must be an int >= 2 or 'auto', got {self.num_samples!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int or 'auto', got {self.batch_size!r}")
        self.pool  # noqa: B018 (parses --predictors)
        for name, low in (("segments", 1), ("surrogate_workers", 1), ("commit_every", 1),
                          ("max_attempts", 1), ("max_words", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("max_seconds", "lease_timeout", "kernel_width", "stall_timeout", "status_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.gpus_per_predictor < 0:
            raise ValueError(f"gpus_per_predictor must be >= 0, got {self.gpus_per_predictor!r}")
        if self.num_features is not None and self.num_features < 1:
            raise ValueError(f"num_features must be >= 1 or None, got {self.num_features!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit!r}")
        if self.run_id is not None:
            check_run_id(self.run_id)

    def to_json(self) -> dict:
        return asdict(self)

    def explainer_spec(self):
        """The one explainer both the predict and the fit stage build (see ExplainerSpec)."""
        from musiclime.explainer import ExplainerSpec
        return ExplainerSpec(num_samples=self.num_samples, kernel_width=self.kernel_width,
                             feature_selection=self.feature_selection, num_features=self.num_features,
                             design=self.design, batch_size=self.batch_size, target=self.target)

    def settings(self, model_id: str | None = None) -> dict:
        """What decides the numbers a run writes (resolved values; the model by its hash).
        A resume must match them; how the work is spread (actors, address, batch size,
        limits, the output) may change between invocations."""
        doc = {k: getattr(self, k) for k in RESULT_SETTINGS}
        doc["num_samples"] = str(doc["num_samples"])
        from musiclime.surrogate import resolve_target
        # auto's meaning may change between releases; a resume compares what was fitted
        doc["target"] = resolve_target(self.target, self.design).value
        if model_id is not None:
            doc["model_id"] = model_id
        return doc

    def config_hash(self, model_id: str) -> str:
        """sha256 over :meth:`settings` with the model: equal hashes, comparable weights."""
        blob = json.dumps(self.settings(model_id), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def pool(self) -> PoolSize:
        """``--predictors`` as bounds of the GPU-stage pool."""
        return PoolSize.parse(self.predictors)

    def in_flight(self, actors: int) -> int:
        """Tracks in the pipeline at most, with ``actors`` GPU-stage actors serving."""
        return self.tracks_in_flight or 2 * max(1, actors) + 2


@dataclass(frozen=True)
class PoolSize:
    """How many GPU-stage actors: between ``low`` and ``high``; ``high`` None (``auto``)
    follows the cluster: floor(cluster GPUs / GPUs per actor), or a count from the CPUs."""
    low: int
    high: int | None

    @classmethod
    def parse(cls, value) -> PoolSize:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"predictors must be >= 1, got {value!r}")
            return cls(value, value)
        text = str(value).strip()
        if text == "auto":
            return cls(1, None)
        if text.isdigit():
            return cls.parse(int(text))
        lo, sep, hi = text.partition(":")
        if sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi):
            return cls(int(lo), int(hi))
        raise ValueError(f"predictors must be N, MIN:MAX (1 <= MIN <= MAX) or auto, got {value!r}")

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def check_run_id(run_id: str) -> str:
    # fullmatch: with match() and "$", "run\n" would pass and name a folder with a newline
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names a folder)")
    return run_id
