"""Evaluate checkpoints the same way every time: quality on a split, plus size, MACs, latency.

`model_cost` is the one place sizes and MACs are computed (evaluate, runs, quantize, fp16 all call
it); `load_split` the one place a checkpoint's evaluation data is found.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from kwscli import metrics
from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.config import DataConfig
from kwscli.data.features import load_features
from kwscli.data.speech_commands import scan_dataset
from kwscli.errors import ConfigError, DataError, KwsError
from kwscli.inference import build_model, float_equivalent, predict_logits, probabilities
from kwscli.models.crnn import count_parameters

DEFAULT_FARS = (0.001, 0.01, 0.05)
SPLITS = ("val", "test", "train", "all")


@dataclass
class Cost:
    params: int
    size_bytes: int  # torch.save(state_dict) of the model as it runs
    macs_1s: int
    macs_2s: int  # the course measured on 2 s


def model_cost(ckpt: Checkpoint, model: torch.nn.Module | None = None) -> Cost:
    """Parameters, saved bytes and thop MACs of a checkpoint's model. int8 layers are counted as
    the float layers they replace (thop counts quantized modules as 0); so are their params."""
    model = model if model is not None else build_model(ckpt)
    counted = float_equivalent(ckpt) if ckpt.kind == "int8" else model
    f = ckpt.features
    return Cost(
        params=count_parameters(counted),
        size_bytes=metrics.size_bytes(model),
        macs_1s=metrics.count_macs(counted, f.n_mels, f.frames(1.0)),
        macs_2s=metrics.count_macs(counted, f.n_mels, f.frames(2.0)),
    )


@dataclass
class ModelReport:
    """Everything `kws evaluate` says about one model (JSON-ready through `to_dict`)."""

    path: str
    kind: str
    label: str  # the kind, with the conv precision of an int8 model
    keyword: str
    data: str
    split: str
    clips: int
    keyword_clips: int
    au_fa_fr: float
    accuracy: float
    operating_points: list[dict]  # FRR at each false-alarm rate (recall = 1 - frr)
    params: int
    size_bytes: int
    macs_1s: int
    macs_2s: int
    latency_ms: float
    roc_auc: float = math.nan  # NaN when the set lacks one of the classes
    skipped_files: int = 0
    skipped_dirs: list[str] = field(default_factory=list)
    targets: dict | None = None  # ratios to a baseline and PASS/FAIL (--baseline)
    curve: dict = field(default_factory=dict, repr=False)  # fa, fr arrays for the plot

    def to_dict(self, with_curve: bool = False) -> dict:
        d = asdict(self)
        if not with_curve:
            d.pop("curve")
        return d


@dataclass
class SplitData:
    data: str
    split: str
    features: torch.Tensor  # (N, n_mels, T)
    labels: np.ndarray  # (N,)
    skipped: int
    skipped_dirs: list[str] = field(default_factory=list)


def load_split(
    ckpt: Checkpoint, data_path: str | Path | None = None, split: str = "val", progress=None
) -> SplitData:
    """The clips of `split` from `data_path` (default: the dataset the model was trained on)."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if data_path is None and not trained_on_here(ckpt):
        raise KwsError(f"{ckpt.path}: {missing_data(ckpt)}; pass --data DIR")
    data_path = data_path or ckpt.data_path
    index = training_split(ckpt, data_path, every_clip=split == "all")
    fs = load_features(index, ckpt.features, progress=progress)
    rows = fs.subset([index.paths[i] for i in index.splits.get(split, [])])
    if len(rows) == 0:
        raise DataError(f"{data_path}: the {split!r} split is empty (try --split all)")
    n_kw = int(fs.labels[rows].sum())
    if n_kw in (0, len(rows)):  # au_fa_fr 0 and accuracy 1.0 here would mean nothing
        raise DataError(
            f"{data_path}: the {split!r} split has {len(rows)} readable clips, {n_kw} of them "
            f"{ckpt.keyword!r}: scoring needs both keyword and other clips (try --split all, "
            "or another --data)"
        )
    return SplitData(
        str(data_path),
        split,
        fs.features[rows],
        fs.labels[rows].numpy(),
        len(fs.skipped),
        index.skipped_dirs,
    )


def trained_on_here(ckpt: Checkpoint) -> bool:
    """Whether the dataset the model was trained on is on this machine (the bundled models' is
    not: they name the folder they were trained on, relative to the project)."""
    return bool(ckpt.data_path) and Path(ckpt.data_path).is_dir()


def missing_data(ckpt: Checkpoint) -> str:
    if not ckpt.data_path:
        return "no dataset recorded in the checkpoint"
    return f"the dataset it was trained on ({ckpt.data_path}) is not on this machine"


def training_split(ckpt: Checkpoint, data_path: str | Path, every_clip: bool = False):
    """The dataset indexed and split exactly as the checkpoint's model was trained (mode, seed,
    fraction come from its provenance). `every_clip` needs no split lists (--split all)."""
    d = ckpt.provenance.data or DataConfig()
    mode = "random" if every_clip else d.split
    return scan_dataset(data_path, ckpt.keyword, mode, d.split_seed, d.val_fraction)


def evaluate_checkpoint(
    path: str | Path,
    data_path: str | Path | None = None,
    split: str = "val",
    fars: tuple[float, ...] | None = None,
    latency: bool = True,
    progress=None,
) -> ModelReport:
    """Score one checkpoint on a split: au_fa_fr, FRR at the false-alarm rates `fars` (default
    DEFAULT_FARS), size, MACs, latency."""
    fars = check_fars(fars)
    ckpt = load_checkpoint(path)
    model = build_model(ckpt)
    data = load_split(ckpt, data_path, split, progress)
    probs = probabilities(predict_logits(model, data.features))
    return build_report(model, ckpt, probs, data, fars, latency)


def check_fars(fars) -> tuple[float, ...]:
    fars = tuple(fars) if fars else DEFAULT_FARS
    if any(not 0 <= x <= 1 for x in fars):
        raise ConfigError(f"--far {list(fars)}: false-alarm rates are between 0 and 1")
    return fars


def build_report(
    model, ckpt: Checkpoint, probs: np.ndarray, data: SplitData, fars, latency: bool
) -> ModelReport:
    labels = data.labels
    cost = model_cost(ckpt, model)
    _, fa, fr = metrics.fa_fr_curve(probs, labels)
    f = ckpt.features
    return ModelReport(
        path=str(ckpt.path),
        kind=ckpt.kind,
        label=ckpt.label,
        keyword=ckpt.keyword,
        data=data.data,
        split=data.split,
        clips=int(len(labels)),
        keyword_clips=int(np.sum(labels)),
        au_fa_fr=metrics.au_fa_fr(probs, labels),
        roc_auc=metrics.roc_auc(probs, labels) if 0 < labels.sum() < len(labels) else math.nan,
        accuracy=metrics.accuracy(probs, labels),
        operating_points=[asdict(metrics.frr_at_far(probs, labels, x)) for x in fars],
        params=cost.params,
        size_bytes=cost.size_bytes,
        macs_1s=cost.macs_1s,
        macs_2s=cost.macs_2s,
        latency_ms=metrics.latency_ms(model, f.n_mels, f.frames(1.0)) if latency else float("nan"),
        skipped_files=data.skipped,
        skipped_dirs=data.skipped_dirs,
        curve={"fa": fa.tolist(), "fr": fr.tolist()},
    )


# ---------------------------------------------------------------- targets


@dataclass
class Targets:
    """The course goal: ≥ 10x less memory, ≥ 10x fewer MACs, au_fa_fr ≤ 1.1x the baseline's."""

    memory: float = 10.0
    macs: float = 10.0
    au_fa_fr: float = 1.1


def check_targets(report: ModelReport, baseline: ModelReport, targets: Targets) -> dict:
    """Ratios to the baseline (memory and MACs: baseline ÷ model, higher is better; au_fa_fr:
    model ÷ baseline, lower is better) and PASS/FAIL for each and overall."""
    memory = baseline.size_bytes / report.size_bytes
    macs = baseline.macs_2s / report.macs_2s
    if baseline.au_fa_fr > 0:
        quality = report.au_fa_fr / baseline.au_fa_fr
    else:  # a perfect baseline: only a perfect model matches it
        quality = 1.0 if report.au_fa_fr == 0 else float("inf")
    passed = {
        "memory": memory >= targets.memory,
        "macs": macs >= targets.macs,
        "au_fa_fr": quality <= targets.au_fa_fr,
    }
    return {
        "baseline": baseline.path,
        "memory_ratio": memory,
        "macs_ratio": macs,
        "au_fa_fr_ratio": quality,
        "targets": asdict(targets),
        "pass": passed,
        "verdict": "PASS" if all(passed.values()) else "FAIL",
    }
