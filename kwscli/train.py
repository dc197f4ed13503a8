"""Assemble a training run: dataset → cached features → model → the engine, into a run folder.

`kws teacher` and `kws distill` call `train_run`: a teacher learns with cross-entropy, a student
with the distillation loss of `distillation`; both take the one path, `train_model`. The folder
itself (lock, resume, replace) is run_folder.py; a student's settings are student.py. Under
torchrun, rank 0 takes that path and the other ranks `_follow` it (kwscli/distributed.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kwscli import distributed, engine
from kwscli.checkpoint import Checkpoint, Provenance, TeacherInfo, load_checkpoint
from kwscli.config import RunConfig
from kwscli.data.augment import FeatureAugmenter, Mixup, white_noise_bank
from kwscli.data.features import FeatureSet, load_features
from kwscli.data.speech_commands import DatasetIndex, scan_dataset
from kwscli.errors import KwsError
from kwscli.inference import build_model
from kwscli.models.crnn import CRNN
from kwscli.run_folder import (
    check_resume_settings,
    open_run_dir,
    previous_run,
    recover_aside,
    remove_if_empty,
    run_lock,
    save_run_config,
    set_aside,
    settle,
)
from kwscli.student import load_teacher


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
    d = cfg.data
    index = scan_dataset(d.path, d.keyword, d.split, d.split_seed, d.val_fraction)
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
    if cfg.distill is not None and cfg.distill.mixup > 0:
        augment = Mixup(cfg.distill.mixup, augment)
    data = engine.TrainData(fs.features, fs.labels, fs.energy, train_idx, val_idx, augment)
    if d.select_on:
        data.select_features, data.select_labels = selection_set(cfg, cache_dir)
    return PreparedData(index, fs, data)


def selection_set(cfg: RunConfig, cache_dir: Path | None = None):
    """Every readable clip of the --select-on dataset, as cached log-mels and labels."""
    index = scan_dataset(cfg.data.select_on, cfg.data.keyword, "random", 0, 0.2)
    fs = load_features(index, cfg.features, cache_dir)
    n_pos = int(fs.labels.sum())
    if n_pos == 0 or n_pos == len(fs.labels):
        raise KwsError(
            f"--select-on {cfg.data.select_on}: {len(fs.labels)} readable clips, {n_pos} of them "
            f"{cfg.data.keyword!r}: it needs both keyword and other clips"
        )
    return fs.features, fs.labels


def cross_entropy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The teacher's loss: plain cross-entropy against the labels."""
    return F.cross_entropy(model(x), y)


def train_run(
    cfg: RunConfig,
    resume: bool = False,
    force: bool = False,
    callbacks: engine.Callbacks | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> engine.TrainResult:
    """Train what `cfg` describes: a teacher (cross-entropy), or with `cfg.distill` a student."""
    if cfg.distill is None:
        kind, criterion, provenance, sampling = (
            "teacher",
            cross_entropy,
            Provenance(loss="ce"),
            None,
        )
    else:
        kind, (criterion, provenance, sampling) = "student", distillation(cfg)
    return train_model(
        cfg, kind, criterion, provenance, resume, force, callbacks, progress, sampling
    )


def distillation(cfg: RunConfig):
    """The loss, provenance and sampling that distil `cfg.distill.teacher` into the student
    `cfg.model` with the loss in `cfg.distill`."""
    from kwscli.distill import (
        AttentionTransfer,
        DistillationCriterion,
        describe,
        hard_negative_weights,
    )

    d = cfg.distill
    teacher_ckpt = load_teacher(d.teacher)
    teacher = build_model(teacher_ckpt)
    attention = AttentionTransfer(
        teacher_ckpt.model.kernel_size[1],
        teacher_ckpt.model.stride[1],
        cfg.model.kernel_size[1],
        cfg.model.stride[1],
    )
    criterion = DistillationCriterion(
        teacher, d.loss, d.temperature, d.alpha, d.attention_weight, attention, d.similarity_weight
    )

    def sampling(data: engine.TrainData) -> torch.Tensor | None:
        if d.hard_negatives == 0:
            return None  # the engine's class-balanced sampler
        rows = data.train_idx
        return hard_negative_weights(
            teacher, data.features[rows], data.labels[rows], d.hard_negatives
        )

    provenance = Provenance(
        loss=describe(d.loss, d.alpha, d.attention_weight, d.similarity_weight)[0],
        distill=d,
        teacher=TeacherInfo(
            path=str(Path(d.teacher).resolve()),
            model=teacher_ckpt.model,
            metrics=teacher_ckpt.metrics,
        ),
    )
    return criterion, provenance, sampling


def train_model(
    cfg: RunConfig,
    kind: str,
    criterion: engine.Criterion,
    provenance: Provenance,
    resume: bool,
    force: bool,
    callbacks: engine.Callbacks | None,
    progress: Callable[[int, int], None] | None,
    sampling: Callable[[engine.TrainData], torch.Tensor | None] | None = None,
) -> engine.TrainResult:
    """The one path every training run takes: run folder, data, model, engine. `sampling`
    gives the training clips' sampling weights (default: class-balanced)."""
    device = engine.resolve_device(cfg.train.device)  # a missing GPU is reported before any work
    with distributed.session(device, cfg.train.batch_size) as world:
        if not world.is_main:
            return _follow(cfg, kind, criterion, provenance, resume)
        with distributed.leading() as release:  # the other ranks wait for the folder and data
            run_dir, created = open_run_dir(cfg, resume)
            try:
                if resume:
                    check_resume_settings(cfg, run_dir)
                with run_lock(run_dir):
                    for junk in run_dir.glob(".*.tmp"):  # half-writes of a killed run
                        junk.unlink(missing_ok=True)
                    recover_aside(run_dir)
                    replaced = [] if resume else previous_run(run_dir, force)
                    return _train_locked(
                        cfg, kind, criterion, provenance, resume, run_dir, callbacks, progress,
                        replaced, sampling, release,
                    )  # fmt: skip
            finally:
                remove_if_empty(created)  # a start that saved nothing leaves no folder


def _follow(cfg, kind, criterion, provenance, resume):
    """A rank other than 0: once rank 0 has checked the run folder and built the feature cache,
    read that cache and train alongside it, writing nothing."""

    def prepare(weights: torch.Tensor | None) -> PreparedData:
        prepared = prepare_data(cfg)
        prepared.train.weights = weights  # rank 0's: sampling must not differ between ranks
        return prepared

    prepared = distributed.follow(prepare)
    run_dir = Path(cfg.runs_dir) / cfg.name
    return _run(cfg, kind, criterion, provenance, resume, run_dir, None, prepared)


def _train_locked(
    cfg, kind, criterion, provenance, resume, run_dir, callbacks, progress, replaced, sampling,
    release,
):  # fmt: skip
    prepared = prepare_data(cfg, progress)  # a data error here leaves the old run untouched
    if sampling is not None:
        prepared.train.weights = sampling(prepared.train)
    release(prepared.train.weights)  # under torchrun: the others go on (the cache is built)
    aside = set_aside(run_dir, replaced)  # back in place unless the new run saves a checkpoint
    try:
        return _run(cfg, kind, criterion, provenance, resume, run_dir, callbacks, prepared)
    finally:
        settle(run_dir, aside)


def _run(cfg, kind, criterion, provenance, resume, run_dir, callbacks, prepared):
    torch.manual_seed(cfg.train.seed)
    model = CRNN(cfg.model, cfg.features.n_mels)
    if distributed.is_main():
        save_run_config(cfg, run_dir)
    data = cfg.data.model_copy(update={"path": str(Path(cfg.data.path).resolve())})
    provenance = provenance.model_copy(update={"data": data, "train": cfg.train})

    def make_checkpoint(metrics: dict) -> Checkpoint:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return Checkpoint(
            kind, cfg.model, cfg.features, cfg.data.keyword, state, metrics, provenance=provenance
        )

    result = engine.train(
        model,
        criterion,
        prepared.train,
        cfg.train,
        run_dir,
        make_checkpoint,
        resume,
        callbacks,
    )
    result.extras["skipped"] = prepared.features.skipped
    if distributed.is_main():
        write_final_metrics(run_dir, result, kind, provenance.loss)
    return result


def write_final_metrics(
    run_dir: Path, result: engine.TrainResult, kind: str, loss: str | None
) -> None:
    """metrics.json: the run's outcome at a glance (best epoch, its val metrics, cost)."""
    from dataclasses import asdict

    from kwscli.evaluate import model_cost
    from kwscli.files import write_json

    ckpt = load_checkpoint(result.checkpoint)
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    write_json(
        run_dir / "metrics.json",
        {
            "kind": kind,
            "loss": loss,
            "best_epoch": result.best_epoch,
            "val_au_fa_fr": best.val_au_fa_fr,
            "val_accuracy": best.val_accuracy,
            "epochs": len(result.history),
            **asdict(model_cost(ckpt)),
            "seconds_per_epoch": [round(r.seconds, 2) for r in result.history],
        },
    )
