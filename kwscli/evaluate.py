"""Evaluate checkpoints the same way every time: quality on a split, plus size, MACs, latency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kwscli import metrics
from kwscli.checkpoint import build_model, load_checkpoint
from kwscli.data.features import load_features
from kwscli.data.speech_commands import scan_dataset
from kwscli.engine import predict
from kwscli.errors import DataError, KwsError

DEFAULT_FARS = (0.001, 0.01, 0.05)


@dataclass
class ModelReport:
    """Everything `kws evaluate` says about one model (JSON-ready through `to_dict`)."""

    path: str
    kind: str
    keyword: str
    data: str
    split: str
    clips: int
    keyword_clips: int
    au_fa_fr: float
    accuracy: float
    operating_points: list[dict]
    params: int
    size_bytes: int
    macs_1s: int
    macs_2s: int
    latency_ms: float
    skipped_files: int = 0
    curve: dict = field(default_factory=dict, repr=False)  # fa, fr arrays for the plot

    def to_dict(self, with_curve: bool = False) -> dict:
        d = asdict(self)
        if not with_curve:
            d.pop("curve")
        return d


def evaluate_checkpoint(
    path: str | Path,
    data_path: str | Path | None = None,
    split: str = "val",
    split_mode: str | None = None,
    fars: tuple[float, ...] = DEFAULT_FARS,
    latency: bool = True,
    progress=None,
) -> ModelReport:
    ckpt = load_checkpoint(path)
    model = build_model(ckpt)
    data_path = data_path or ckpt.info.get("data")
    if not data_path:
        raise KwsError(f"{path}: no dataset recorded in the checkpoint; pass --data DIR")
    if split == "all":
        split_mode = "random"  # every clip; needs no split lists
    split_mode = split_mode or ckpt.info.get("split", "official")
    index = scan_dataset(data_path, ckpt.keyword, split_mode)
    fs = load_features(index, ckpt.features, progress=progress)
    rows = fs.subset([index.paths[i] for i in index.splits.get(split, [])])
    if len(rows) == 0:
        raise DataError(f"{data_path}: the {split!r} split is empty (try --split val or --all)")
    labels = fs.labels[rows].numpy()
    probs, _ = predict(model, fs.features[rows])
    return build_report(
        model, ckpt, probs, labels, str(data_path), split, fars, latency, skipped=len(fs.skipped)
    )


def build_report(
    model, ckpt, probs, labels, data: str, split: str, fars, latency: bool, skipped: int = 0
) -> ModelReport:
    n_mels = ckpt.features.n_mels
    frames_1s, frames_2s = ckpt.features.frames(1.0), ckpt.features.frames(2.0)
    ops = [asdict(metrics.frr_at_far(probs, labels, f)) for f in fars]
    _, fa, fr = metrics.fa_fr_curve(probs, labels)
    return ModelReport(
        path=str(ckpt.path),
        kind=ckpt.kind,
        keyword=ckpt.keyword,
        data=data,
        split=split,
        clips=int(len(labels)),
        keyword_clips=int(np.sum(labels)),
        au_fa_fr=metrics.au_fa_fr(probs, labels),
        accuracy=metrics.accuracy(probs, labels),
        operating_points=ops,
        params=sum(p.numel() for p in model.parameters()),
        size_bytes=metrics.size_bytes(model),
        macs_1s=metrics.count_macs(model, n_mels, frames_1s),
        macs_2s=metrics.count_macs(model, n_mels, frames_2s),
        latency_ms=metrics.latency_ms(model, n_mels, frames_1s) if latency else float("nan"),
        skipped_files=skipped,
        curve={"fa": fa.tolist(), "fr": fr.tolist()},
    )
