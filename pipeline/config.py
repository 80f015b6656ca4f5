"""The explain job's configuration: one frozen object, stored in run.json."""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from musiclime.choices import Choice
from pipeline.resources import PoolSize, in_flight, separation_group

if TYPE_CHECKING:
    from musiclime.explainer import ExplainerSpec
    from musiclime.stages import DecodeSpec, FitSpec, LabelRule

_ALWAYS = object()  # hashed_since's default: an option hashed since outputs were first written


@dataclass(frozen=True)
class Option:
    """How one :class:`ExplainConfig` field is offered and treated (see :func:`option`)."""
    help: str | None
    cli: bool
    choices: Callable[[], Iterable[str]] | None
    parse: Callable[[str], Any] | None
    flag: bool
    hashed: bool
    hashed_since: Any
    stage: str


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the whole string: see check_run_id


class SeparatorName(Choice):
    """``--separator``: where a track's stems come from (the separators themselves live in
    :mod:`musiclime.separation`)."""
    __option__ = "separator"
    HPSS = "hpss"
    DEMUCS = "demucs"
    PROVIDED = "provided"
    NONE = "none"


class Labels(Choice):
    """The named rules; ``topk:N`` and class names are the other forms (LabelRule.parse)."""
    TOP1 = "top1"
    TRUE = "true"
    ALL = "all"


def parse_labels(value: object) -> str:
    from musiclime.stages import LabelRule  # where labels are interpreted
    return LabelRule.parse(value)


class Window(Choice):
    MIDDLE = "middle"  # the middle --max-seconds (default 30)
    WHOLE = "whole"    # the whole track up to --max-seconds (default 600), heard window by window


class LyricsWindow(Choice):
    ON = "on"     # synced lyrics: the words sung inside the explained audio window
    OFF = "off"


class OutputFormat(Choice):
    AUTO = "auto"        # delta on object stores, parquet on local and NFS paths
    PARQUET = "parquet"  # hive-partitioned Parquet files, committed by rename
    DELTA = "delta"      # Delta tables, committed with application transactions (no rename)
    ICEBERG = "iceberg"  # Iceberg tables in a catalog named by configuration, marks in table properties


def option(default: Any, help: str | None = None, *, cli: bool = True, choices: Callable[[], Iterable[str]] | None = None,
           parse: Callable[[str], Any] | None = None, flag: bool = False, hashed: bool = False,
           hashed_since: Any = _ALWAYS, stage: str = "driver") -> Any:
    """One option, declared once: its default, ``--help`` text, choices (read from the enum
    that validates it), how the command line parses it, whether it decides the numbers a run
    writes (``hashed``: compared on resume, part of the config hash) and which stage reads it.

    ``hashed_since``: for an option added after outputs already stand, the value that
    behaves as before it existed: left at it, the option is not in the settings, so no
    standing output's config hash changes (every night would otherwise re-explain its
    library).
    """
    meta = Option(help=help, cli=cli, choices=choices, parse=parse, flag=flag, hashed=hashed,
                  hashed_since=hashed_since, stage=stage)
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"option": meta})
    return field(default=default, metadata={"option": meta})


def _values(enum_path: str) -> Callable[[], list[str]]:
    """The values of an enum (``module:Class``), read when the command line is built."""
    def values() -> list[str]:
        import importlib
        module, _, name = enum_path.partition(":")
        return [m.value for m in getattr(importlib.import_module(module), name)]
    return values


def _design_choices() -> list[str]:
    from musiclime.designs import CHOICES
    return list(CHOICES)


def int_or_auto(text: str) -> int | str:
    """``--num-samples``, ``--batch-size``: an int, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'auto', got {text!r}") from None


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human lines for every setting that differs (keys only one side has are skipped:
    a run's model hash is known only once the model loads)."""
    return [f"{k}: {old[k]!r} before, {new[k]!r} now" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


@dataclass(frozen=True)
class ExplainConfig:
    """Every option of ``musiclime explain``, declared once (see :func:`option`): the command
    line (:func:`add_arguments`), this object, ``run.json``'s settings and the config hash
    are all built from these declarations."""
    catalogue: str = option(None, "Parquet, CSV, JSONL, or a folder of audio files with sidecar .txt lyrics",
                            stage="plan")
    model: str = option("default", "default | default:emotion | a folder (musiclime checkpoint, or a Hugging Face "
                        "audio or text classifier saved with save_pretrained: its config.json says which) | "
                        "hf:ORG/NAME[@REVISION] (Hugging Face hub; offline: from the HF cache) | "
                        "package.module:factory (a plugin)", stage="predict")
    out: str = option(None, "output folder or URI (s3://bucket/prefix): tables partitioned by run_id=",
                      stage="write")
    separator: str = option("hpss", choices=_values("pipeline.config:SeparatorName"), hashed=True, stage="decode")
    quality: str | None = option(None, "sampling preset: fast (the paper's Jaccard and AOPC to a 16k reference at the "
                                 "least measured work), paper (exactly the paper's: 1,000 i.i.d. masks, probability "
                                 "target) or steady (the paper's work on the best measured design, log-odds target); "
                                 "--num-samples, --design and --target override it. Default: none, i.e. 1,000 foldover "
                                 "masks with the log-odds target (docs/benchmarks.md 'Presets')",
                                 choices=_values("musiclime.presets:Quality"), hashed=True, hashed_since=None,
                                 stage="predict")
    num_samples: int | str | None = option(None, "perturbations per track (default: the preset's, or 1000), or "
                                           "'auto': sample in rounds until every explained label's top-10 is "
                                           "separated from the rest with 95%% confidence (or tied), at most the "
                                           "design's cap", parse=int_or_auto, hashed=True, stage="predict")
    design: str | None = option(None, "mask design: iid (the reference's exactly), foldover, grid, orthogonal "
                                "(folded orthogonal arrays), orthogonal-grid (late fusion: audio x lyrics orthogonal "
                                "half-masks), orthogonal-cross (the same, block by block: joint rows bounded); auto "
                                "(the default): the preset's, else with --num-samples auto orthogonal-grid on a "
                                "late-fusion model, orthogonal otherwise, and with a fixed count foldover",
                                choices=_design_choices, hashed=True, stage="predict")
    target: str | None = option(None, "what the surrogate fits: the class probability (the reference's) or its "
                                "log-odds (for confident models); default: the preset's, else auto: log_odds, but "
                                "probability under --design iid (the paper's setting; docs/benchmarks.md 'Targets')",
                                choices=_values("musiclime.surrogate:Target"), hashed=True, stage="fit")
    segments: int = option(10, "temporal segments per track", hashed=True, stage="predict")
    labels: str = option("top1", "which classes to explain: top1, true (--label-column's), all, topk:N (the N "
                         "most probable: a multi-label tagger's tags) or CLASS,CLASS", parse=parse_labels, hashed=True,
                         stage="predict")
    label_column: str | None = option(None, "catalogue column with the true label", hashed=True, stage="decode")
    modality: str = option("both", choices=_values("musiclime.masks:Modality"), hashed=True, stage="predict")
    seed: int = option(0, hashed=True, stage="predict")
    run_id: str | None = option(None, "name of the run; rerun with the same id to resume")
    address: str | None = option("local", "local (a private Ray), auto, or ray://host:port")
    predictors: int | str = option(1, "GPU-stage actors: N, MIN:MAX (an elastic pool: MIN must fit, more start as "
                                   "the cluster grows), or auto (floor(cluster GPUs / --gpus-per-predictor), "
                                   "growing with the cluster; without GPUs one per 4 CPUs)", parse=PoolSize.text)
    gpus_per_predictor: float = option(0.0)
    surrogate_workers: int = option(1, "surrogate fits the plan must find CPU room for at once; fits are Ray tasks, "
                                    "so more run on any free CPU (new nodes included)")
    limit: int | None = option(None, "explain only the first N catalogue rows", parse=int, stage="plan")
    window: str = option("middle", "middle: the middle --max-seconds of a track are explained; whole: the whole "
                         "track (up to --max-seconds), the model's prediction being the mean of its probabilities "
                         "over consecutive windows of its input length (cost: windows x rows)",
                         choices=_values("pipeline.config:Window"), hashed=True, hashed_since="middle",
                         stage="decode")
    max_seconds: float = option(None, "seconds explained per track: the middle window (default 30), or with "
                                "--window whole the track's first seconds (default 600)", parse=float, hashed=True,
                                stage="decode")
    lyrics_window: str = option("on", "on: time-synced lyrics (LRC, SYLT) are cut to the words sung inside the "
                                "explained audio window (the model reads only those); off: the whole lyrics",
                                choices=_values("pipeline.config:LyricsWindow"), hashed=True, hashed_since="on",
                                stage="decode")
    max_words: int = option(1000, "distinct lyric words explained per track; longer lyrics are truncated and "
                            "flagged lyrics_truncated", hashed=True, stage="decode")
    stem_cache: str | None = option(None, "stem cache directory (default $MUSICLIME_HOME/stems)", stage="predict")
    demucs_model: str = option("htdemucs", hashed=True, stage="predict")
    demucs_repo: str | None = option(None, "folder with demucs weights (see docs/models.md)", stage="predict")
    trust_pickle: bool = option(False, "allow a legacy demucs .th pickle", flag=True, stage="predict")
    batch_size: int | str = option("auto", "rows per model call: auto or an int", parse=int_or_auto, stage="predict")
    feature_selection: str = option("auto", choices=_values("musiclime.surrogate:FeatureSelection"), hashed=True,
                                    stage="fit")
    kernel_width: float = option(25.0, "LIME kernel width on cosine distances", hashed=True, stage="fit")
    num_features: int | None = option(None, "features kept per label (default: all)", parse=int, hashed=True,
                                      stage="fit")
    commit_every: int = option(64, "tracks per committed Parquet file", stage="write")
    retry_errors: bool = option(False, "on resume, retry rows recorded in errors (with --incremental: also "
                                "earlier nights' errors)", flag=True, stage="plan")
    max_attempts: int = option(3, "tries per track before it goes to errors")
    tracks_in_flight: int | None = option(None, "backpressure bound (default 2N per predictor + 2, N: "
                                          "--separation-batch)", parse=int)
    separation_batch: int | None = option(None, "tracks an actor's demucs separates in one batched call: tracks start "
                                          "in groups of N, the first call of a group separates it into the stem "
                                          "cache (default 8 with demucs on GPUs, else 1)", parse=int, stage="predict")
    lease_timeout: float = option(60.0, "seconds without a heartbeat after which another driver may take the "
                                  "output over", stage="write")
    status_every: float = option(30.0, "seconds between status lines when stderr is not a terminal (job logs)")
    stall_timeout: float = option(1800.0, "seconds a predictor may hold tracks without finishing one before it is "
                                  "replaced and its tracks retried; a track that stalls twice is recorded as timeout")
    format: str = option("auto", "output tables: parquet (renamed files: local, NFS), delta (transactions: object "
                         "stores), iceberg (in --iceberg-catalog), or auto (delta on object stores, else parquet)",
                         choices=_values("pipeline.config:OutputFormat"), stage="write")
    iceberg_catalog: str = option("default", "--format iceberg: the catalog's name in pyiceberg's config", stage="write")
    iceberg_namespace: str = option("musiclime", "--format iceberg: the tables' namespace in it", stage="write")
    precision: str = option("auto", "model forward passes on a GPU: autocast to bf16 (auto, where the GPU has it, "
                            "else fp16) or fp16, or fp32; CPUs always run fp32",
                            choices=_values("musiclime.accelerate:Precision"), stage="predict")
    compile: str = option("off", "torch.compile the model's encoders in each GPU-stage actor: on, or graphs (also CUDA "
                          "graphs for the batch shapes it meets); each actor pays minutes of compiling, which a long "
                          "night on a GPU pays back, a short run or a CPU does not",
                          choices=_values("musiclime.accelerate:Compile"), stage="predict")
    # set from the model by the driver, never on the command line
    model_window: float | None = option(None, cli=False, stage="decode")   # seconds the model sees (AST 10.24)
    audio_used: bool = option(True, cli=False, stage="decode")  # False: a text classifier never hears audio
    incremental: bool = option(False, "--out is a standing output that nights add to: explain only rows whose "
                               "content key (track_id + checksum column, or size/mtime of its files, + inline "
                               "lyrics) has no explanation under the same model and config; earlier errors only "
                               "with --retry-errors", flag=True, stage="plan")
    extra: dict[str, Any] = option({}, cli=False)
    default_sampling: bool = option(False, cli=False)  # no sampling option given: the default preset applied

    def __post_init__(self) -> None:
        """Every option is checked here, once: a bad value from the CLI or from Python is a
        ValueError (exit 2) before any catalogue is read or Ray is started."""
        Window.parse(self.window)
        LyricsWindow.parse(self.lyrics_window)
        self._resolve_sampling()
        if self.max_seconds is None:  # the window's own default, resolved once (hashed as resolved)
            object.__setattr__(self, "max_seconds", 600.0 if self.window == Window.WHOLE.value else 30.0)
        for name in ("catalogue", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a path or URI, got {getattr(self, name)!r}")
        from musiclime.masks import Modality
        SeparatorName.parse(self.separator)
        OutputFormat.parse(self.format)
        from musiclime.accelerate import Compile, Precision
        Precision.parse(self.precision)
        Compile.parse(self.compile)
        object.__setattr__(self, "labels", parse_labels(self.labels))
        Modality.parse(self.modality)
        self.explainer_spec()  # num_samples, design, batch size, target, feature selection: checked by the core
        self.pool  # noqa: B018 (parses --predictors)
        for name, low in (("segments", 1), ("surrogate_workers", 1), ("commit_every", 1),
                          ("max_attempts", 1), ("max_words", 0), ("separation_batch", 1)):
            value = getattr(self, name)
            if name == "separation_batch" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("max_seconds", "lease_timeout", "stall_timeout", "status_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.gpus_per_predictor < 0:
            raise ValueError(f"gpus_per_predictor must be >= 0, got {self.gpus_per_predictor!r}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit!r}")
        if self.run_id is not None:
            check_run_id(self.run_id)

    def _resolve_sampling(self) -> None:
        """--quality with --num-samples / --design / --target, resolved once
        (:func:`musiclime.presets.resolve`)."""
        from musiclime.presets import resolve
        chosen = resolve(self.quality, self.num_samples, self.design, self.target)
        for name, value in zip(SAMPLING, chosen.values):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "default_sampling", self.default_sampling or chosen.by_default)

    def keep_sampling(self, standing: dict[str, Any]) -> ExplainConfig:
        """This config with a standing output's sampling (the ``settings`` of its latest
        run) when this run chose none: an incremental night after a release that changes
        the default preset explains new tracks as the old ones were, and does not redo the
        library."""
        if not self.default_sampling or not standing:
            return self
        from dataclasses import replace

        from musiclime.presets import from_settings
        return replace(self, default_sampling=False, **dict(zip(SAMPLING, from_settings(standing))))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def explainer_spec(self) -> ExplainerSpec:
        """The one explainer both the predict and the fit stage build (see ExplainerSpec)."""
        from musiclime.explainer import ExplainerSpec
        return ExplainerSpec(num_samples=self.num_samples, kernel_width=self.kernel_width,
                             feature_selection=self.feature_selection, num_features=self.num_features,
                             design=self.design, batch_size=self.batch_size, target=self.target,
                             quality=self.quality)

    def decode_spec(self) -> DecodeSpec:
        """What the decode stage reads of this run (see :class:`musiclime.stages.DecodeSpec`)."""
        from musiclime.stages import DecodeSpec
        return DecodeSpec(seed=self.seed, separator=self.separator, segments=self.segments,
                          max_seconds=self.max_seconds, model_window=self.model_window, max_words=self.max_words,
                          audio_used=self.audio_used, label_column=self.label_column, stem_cache=self.stem_cache,
                          lyrics_window=self.lyrics_window, window=self.window)

    def label_rule(self) -> LabelRule:
        from musiclime.stages import LabelRule
        return LabelRule(self.labels, self.label_column)

    def fit_spec(self, model_id: str) -> FitSpec:
        """What the fit stage reads of this run, with the config hash of ``model_id``."""
        from musiclime.stages import FitSpec
        return FitSpec(self.explainer_spec(), self.label_rule(), self.separator, self.config_hash(model_id))

    def settings(self, model_id: str | None = None) -> dict[str, Any]:
        """What decides the numbers a run writes (resolved values; the model by its hash).
        A resume must match them; how the work is spread (actors, address, batch size,
        limits, the output) may change between invocations."""
        doc = {k: getattr(self, k) for k in RESULT_SETTINGS
               if OPTIONS[k].hashed_since is _ALWAYS or getattr(self, k) != OPTIONS[k].hashed_since}
        from musiclime.surrogate import resolve_target
        for name in ("num_samples", "design"):  # None: the preset's, which the quality key names
            doc[name] = "preset" if doc[name] is None else str(doc[name])
        # auto's meaning may change between releases; a resume compares what was fitted
        doc["target"] = resolve_target(self.target or "auto", self.design or "auto").value
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
        """Tracks in the pipeline at most with ``actors`` GPU-stage actors (:mod:`pipeline.resources`)."""
        return in_flight(self.tracks_in_flight, actors, self.tracks_per_separation)

    @property
    def tracks_per_separation(self) -> int:
        return separation_group(self.separation_batch, self.separator, self.audio_used, self.gpus_per_predictor)


def check_run_id(run_id: str) -> str:
    # fullmatch: with match() and "$", "run\n" would pass and name a folder with a newline
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names a folder)")
    return run_id


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(ExplainConfig)}
# The settings that change a run's numbers (see ExplainConfig.settings).
RESULT_SETTINGS = tuple(name for name, o in OPTIONS.items() if o.hashed)
SAMPLING = ("quality", "num_samples", "design", "target")  # resolved together (_resolve_sampling)
POSITIONAL = ("catalogue",)
REQUIRED = ("out",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line of every option with ``cli``, in declaration order."""
    for name, o in OPTIONS.items():
        if not o.cli:
            continue
        default = ExplainConfig.__dataclass_fields__[name].default
        kw: dict[str, Any] = {"help": o.help}
        if o.flag:
            kw["action"] = "store_true"
        else:
            if o.choices is not None:
                kw["choices"] = list(o.choices())
            if o.parse is not None:
                kw["type"] = o.parse
            elif default is not None and not isinstance(default, str):
                kw["type"] = type(default)
            if name not in POSITIONAL:
                kw["default"] = default
        if name in POSITIONAL:
            p.add_argument(name, **kw)
        else:
            p.add_argument("--" + name.replace("_", "-"), required=name in REQUIRED, **kw)


def from_arguments(args: argparse.Namespace) -> ExplainConfig:
    """The config of parsed arguments (validated: a bad value is a ValueError)."""
    return ExplainConfig(**{name: getattr(args, name) for name, o in OPTIONS.items() if o.cli})
