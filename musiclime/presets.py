"""``--quality``: what an explanation costs and how steady it is, as named presets.

Each preset says, per model type, which sampling design draws the masks, how much model
work it spends against the paper's setting, and which target the surrogate fits. The
model work is counted where it happens: encoder rows (audio + text) on a late-fusion
model whose two modalities are perturbed, full model rows otherwise; the paper's 1,000
i.i.d. joint masks cost 2,000 encoder rows on late fusion (each encoder once per row), or
1,000 model rows.

The presets and the measurements that chose them: ``bench/bench_presets.py``,
``bench/results/presets.json`` and docs/benchmarks.md "Presets".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from musiclime.choices import Choice

PAPER_SAMPLES = 1000  # the paper's i.i.d. joint masks per track


class Quality(Choice):
    __option__ = "quality"
    FAST = "fast"      # the paper's Jaccard and AOPC to a 16k reference at the least measured work
    PAPER = "paper"    # exactly the paper's: 1,000 i.i.d. masks, probability target
    STEADY = "steady"  # the paper's work on the best measured design, log-odds target


@dataclass(frozen=True)
class Setting:
    """One model type's sampling under a preset: the design, the work as a fraction of the
    paper's (``None``: ``num_samples`` joint rows, whatever they cost) and the target."""
    design: str
    target: str
    work_ratio: float | None = None
    num_samples: int | None = None

    def work(self, late_fusion_crossed: bool) -> int:
        """Model work per track: encoder rows when a late-fusion model's two modalities are
        perturbed, model rows otherwise."""
        paper = 2 * PAPER_SAMPLES if late_fusion_crossed else PAPER_SAMPLES
        return max(2, round(paper * (self.work_ratio or 1.0)))


@dataclass(frozen=True)
class Preset:
    name: str
    late_fusion: Setting  # a model with embed_audio / embed_lyrics / head: encoders run per half-mask
    joint: Setting        # predict_proba only: every joint row is one full model pass

    def setting(self, late_fusion: bool) -> Setting:
        return self.late_fusion if late_fusion else self.joint

    @property
    def num_samples(self) -> int | None:
        """The joint rows the preset fixes for every model type (the paper's), else None:
        sized per track from the work."""
        counts = {self.late_fusion.num_samples, self.joint.num_samples}
        return counts.pop() if len(counts) == 1 else None

    @property
    def target(self) -> str:
        assert self.late_fusion.target == self.joint.target, "a preset fits one target"
        return self.late_fusion.target


_PAPER = Setting("iid", "probability", num_samples=PAPER_SAMPLES)
PRESETS: dict[str, Preset] = {
    Quality.PAPER.value: Preset("paper", _PAPER, _PAPER),
    # the best measured design per model type (bench/bench_sampling.py), at the paper's work
    Quality.STEADY.value: Preset("steady", Setting("orthogonal-cross", "log_odds", work_ratio=1.0),
                                 Setting("orthogonal", "log_odds", work_ratio=1.0)),
    # the goals' work: 10x less encoder work (late fusion), 4x fewer model rows
    Quality.FAST.value: Preset("fast", Setting("orthogonal-cross", "log_odds", work_ratio=0.1),
                               Setting("orthogonal", "log_odds", work_ratio=0.25)),
}
DEFAULT_QUALITY: str | None = None
"""The preset a run gets when it names none; None: ``--num-samples 1000`` on the foldover
design with the log-odds target, as before presets (docs/benchmarks.md "Presets" says why
``steady`` is not yet the default)."""


def get(name: str) -> Preset:
    return PRESETS[Quality.parse(name).value]


class Sampling(NamedTuple):
    """A run's resolved sampling options, and whether none was given (the default applied)."""
    quality: str | None
    num_samples: int | str | None
    design: str | None
    target: str | None
    by_default: bool

    @property
    def values(self) -> tuple:
        return self.quality, self.num_samples, self.design, self.target


_BEFORE = {"num_samples": PAPER_SAMPLES, "design": "auto", "target": "auto"}  # the options before presets


def resolve(quality: str | None, num_samples: int | str | None, design: str | None, target: str | None) -> Sampling:
    """``--quality`` with the expert options. With a preset, the options given override its
    parts and the others stay None (the preset's, per model type; the target is the same
    for every type, so it is filled in). Without one, giving any option means what it meant
    before presets (the others 1000, auto, auto); giving none takes :data:`DEFAULT_QUALITY`."""
    given = any(v is not None for v in (num_samples, design, target))
    by_default = quality is None and not given
    quality = DEFAULT_QUALITY if by_default else quality
    quality = None if quality is None else Quality.parse(quality).value
    if quality is None:
        num_samples = PAPER_SAMPLES if num_samples is None else num_samples
        design, target = design or "auto", target or "auto"
    elif target is None:
        target = get(quality).target
    return Sampling(quality, num_samples, design, target, by_default)


def from_settings(settings: dict[str, Any]) -> tuple:
    """(quality, num_samples, design, target) of a run's recorded settings (``run.json``),
    to explain more tracks exactly as that run did."""
    quality = settings.get("quality")
    values = []
    for name in ("num_samples", "design", "target"):
        value = settings.get(name)
        value = None if value in (None, "preset") else value
        if name == "num_samples" and isinstance(value, str) and value.isdigit():
            value = int(value)
        values.append(_BEFORE[name] if value is None and quality is None else value)
    return (quality, *values)
