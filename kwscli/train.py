"""Assemble a training run: dataset → cached features → model → the engine, into a run folder.

`kws teacher` calls `train_teacher`; `kws distill` reuses `prepare_data` and `open_run_dir` with a
distillation loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kwscli import engine
from kwscli.checkpoint import Checkpoint
from kwscli.config import RunConfig
from kwscli.data.augment import FeatureAugmenter, white_noise_bank
from kwscli.data.features import FeatureSet, load_features
from kwscli.data.speech_commands import DatasetIndex, scan_dataset
from kwscli.errors import KwsError
from kwscli.files import atomic_write
from kwscli.models.crnn import CRNN

RUN_FILES = ("model.pt", "last.pt", "history.json", "config.yaml", "curves.png", "metrics.json")


@dataclass
class PreparedData:
    index: DatasetIndex
    features: FeatureSet
    train: engine.TrainData


def prepare_data(
    cfg: RunConfig,
    progress: Callable[[int, int], None] | None = None,
    cache_dir: Path | None = None,
) -> PreparedData:
    """Index the dataset, load (or build) its feature cache, and pick train/val rows."""
    index = scan_dataset(
        cfg.data.path, cfg.data.keyword, cfg.data.split, cfg.train.seed, cfg.data.val_fraction
    )
    fs = load_features(index, cfg.features, cache_dir, progress)
    train_idx = fs.subset([index.paths[i] for i in index.splits["train"]])
    val_idx = fs.subset([index.paths[i] for i in index.splits["val"]])
    for name, idx in (("train", train_idx), ("val", val_idx)):
        n_pos = int(fs.labels[idx].sum()) if len(idx) else 0
        if n_pos == 0 or n_pos == len(idx):
            raise KwsError(
                f"the {name} split of {index.root} has {len(idx)} clips, {n_pos} of them "
                f"{cfg.data.keyword!r}: it needs both keyword and other clips"
            )
    augment = None
    if cfg.train.augment:
        augment = FeatureAugmenter(fs.noise_power, fs.noise_energy, white_noise_bank(cfg.features))
    data = engine.TrainData(fs.features, fs.labels, fs.energy, train_idx, val_idx, augment)
    return PreparedData(index, fs, data)


def open_run_dir(cfg: RunConfig, resume: bool, force: bool) -> Path:
    """The run folder: refuse to clobber a finished or running run unless asked to."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    if resume:
        if not (run_dir / engine.LAST).is_file():
            raise KwsError(f"{run_dir}: nothing to resume (no {engine.LAST}); drop --resume")
        return run_dir
    existing = [f for f in RUN_FILES if (run_dir / f).exists()]
    if existing and not force:
        raise KwsError(
            f"{run_dir} already holds a run ({', '.join(existing)}); use --resume to continue it, "
            "--force to replace it, or --name for a new one"
        )
    for f in existing:
        (run_dir / f).unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise KwsError(f"{run_dir}: cannot write there ({exc.strerror})") from None
    return run_dir


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    import yaml

    with atomic_write(run_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def cross_entropy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The teacher's loss: plain cross-entropy against the labels."""
    return F.cross_entropy(model(x), y)


def train_teacher(
    cfg: RunConfig,
    resume: bool = False,
    force: bool = False,
    callbacks: engine.Callbacks | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> engine.TrainResult:
    run_dir = open_run_dir(cfg, resume, force)
    prepared = prepare_data(cfg, progress)
    torch.manual_seed(cfg.train.seed)
    model = CRNN(cfg.model, cfg.features.n_mels)
    save_run_config(cfg, run_dir)
    info = {
        "data": str(Path(cfg.data.path).resolve()),
        "split": cfg.data.split,
        "train": cfg.train.model_dump(mode="json"),
        "loss": "ce",
    }

    def make_checkpoint(metrics: dict) -> Checkpoint:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return Checkpoint(
            "teacher", cfg.model, cfg.features, cfg.data.keyword, state, metrics=metrics, info=info
        )

    result = engine.train(
        model,
        cross_entropy,
        prepared.train,
        cfg.train,
        run_dir,
        make_checkpoint,
        resume,
        PlottingCallbacks(callbacks, run_dir),
    )
    result.extras["skipped"] = prepared.features.skipped
    return result


class PlottingCallbacks:
    """Passes events on and redraws the training curves beside the checkpoint each epoch."""

    def __init__(self, inner: engine.Callbacks | None, run_dir: Path) -> None:
        self.inner = inner or engine.NoCallbacks()
        self.run_dir = run_dir
        self.history: list[engine.EpochRecord] = []

    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.inner.on_start(epochs, steps_per_epoch, start_epoch)

    def on_step(self, epoch: int, step: int, loss: float) -> None:
        self.inner.on_step(epoch, step, loss)

    def on_epoch_end(self, record: engine.EpochRecord) -> None:
        from kwscli.report import plot_history

        plot_history(self.run_dir / engine.HISTORY, self.run_dir / "curves.png")
        self.inner.on_epoch_end(record)
