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
from kwscli.checkpoint import Checkpoint, Provenance, TeacherInfo, load_checkpoint
from kwscli.config import DataConfig, DistillConfig, RunConfig
from kwscli.data.augment import FeatureAugmenter, Mixup, white_noise_bank
from kwscli.data.features import FeatureSet, load_features
from kwscli.data.speech_commands import DatasetIndex, scan_dataset
from kwscli.errors import ConfigError, KwsError
from kwscli.files import atomic_write
from kwscli.inference import build_model
from kwscli.models.crnn import CRNN, count_parameters

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


def open_run_dir(cfg: RunConfig, resume: bool) -> Path:
    """The run folder, created and checked writable before any work starts."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    if resume and not (run_dir / engine.LAST).is_file():
        raise KwsError(f"{run_dir}: nothing to resume (no {engine.LAST}); drop --resume")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise KwsError(f"{run_dir}: cannot write there ({exc.strerror})") from None
    return run_dir


RESUMABLE_CHANGES = ("name", "runs_dir", "train.num_epochs", "train.device")


def check_resume_settings(cfg: RunConfig, run_dir: Path) -> None:
    """--resume continues the same run: only the epoch count and the device may change."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return  # killed before its config was written: nothing to compare against
    changed = [
        k for k in _differences(saved, cfg.model_dump(mode="json")) if k not in RESUMABLE_CHANGES
    ]
    if changed:
        raise ConfigError(
            f"--resume with settings that differ from the run in {run_dir}: {', '.join(changed)} "
            "(only the number of epochs and the device may change; use --name for a new run)"
        )


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def previous_run(run_dir: Path, force: bool) -> list[Path]:
    """The files of an earlier run here: refused unless --force, and then returned so they can
    be removed once the new run is known to start (held under the run lock)."""
    existing = [run_dir / f for f in RUN_FILES if (run_dir / f).exists()]
    if existing and not force:
        raise KwsError(
            f"{run_dir} already holds a run ({', '.join(f.name for f in existing)}); use --resume "
            "to continue it, --force to replace it, or --name for a new one"
        )
    return existing


class run_lock:
    """`with run_lock(run_dir):` one training run per folder at a time. The lock file names the
    process holding it; a lock left by a process that no longer exists is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"

    def __enter__(self) -> run_lock:
        import os

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder is not None and _alive(holder):
                    raise KwsError(
                        f"{self.path.parent} is in use by another kws run (pid {holder}); wait "
                        "for it to finish or pick another --name"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise KwsError(f"{self.path}: could not take the run lock; remove it if no run is active")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    return train_model(
        cfg, "teacher", cross_entropy, Provenance(loss="ce"), resume, force, callbacks, progress
    )


def train_student(
    cfg: RunConfig,
    resume: bool = False,
    force: bool = False,
    callbacks: engine.Callbacks | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> engine.TrainResult:
    """Distil `cfg.distill.teacher` into the student `cfg.model` with the loss in `cfg.distill`."""
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
    return train_model(
        cfg, "student", criterion, provenance, resume, force, callbacks, progress, sampling
    )


def load_teacher(path: str | Path) -> Checkpoint:
    ckpt = load_checkpoint(path)
    if ckpt.kind not in ("teacher", "student"):
        raise KwsError(
            f"{path}: an {ckpt.kind} checkpoint cannot teach; pass a float teacher "
            "(kind teacher or student) with --teacher"
        )
    return ckpt


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
    engine.resolve_device(cfg.train.device)  # a missing GPU is reported before any work
    run_dir = open_run_dir(cfg, resume)
    if resume:
        check_resume_settings(cfg, run_dir)
    with run_lock(run_dir):
        for junk in run_dir.glob(".*.tmp"):  # half-writes of a killed run: never the real files
            junk.unlink(missing_ok=True)
        replaced = [] if resume else previous_run(run_dir, force)
        return _train_locked(
            cfg, kind, criterion, provenance, resume, run_dir, callbacks, progress, replaced,
            sampling,
        )  # fmt: skip


def _train_locked(
    cfg, kind, criterion, provenance, resume, run_dir, callbacks, progress, replaced, sampling
):
    prepared = prepare_data(cfg, progress)  # a data error here leaves the old run untouched
    if sampling is not None:
        prepared.train.weights = sampling(prepared.train)
    for f in replaced:
        f.unlink(missing_ok=True)
    torch.manual_seed(cfg.train.seed)
    model = CRNN(cfg.model, cfg.features.n_mels)
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
    write_final_metrics(run_dir, result, kind, provenance.loss)
    return result


def write_final_metrics(
    run_dir: Path, result: engine.TrainResult, kind: str, loss: str | None
) -> None:
    """metrics.json: the run's outcome at a glance (best epoch, its val metrics, cost)."""
    from dataclasses import asdict

    from kwscli.checkpoint import load_checkpoint
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


def student_config(file: str | Path | None, overrides: dict) -> tuple[RunConfig, list[str]]:
    """Resolve a student's settings: its features and keyword are the teacher's (asking for
    different ones is an error, not a silent mismatch); its dataset and split default to the
    teacher's, so it validates on the same clips; its model defaults to the user's final student
    of SPEC §1. Returns the config and any warnings."""
    from kwscli.config import (
        STUDENT_DEFAULTS,
        build_config,
        deep_merge,
        drop_none,
        read_config_file,
    )

    asked = deep_merge(read_config_file(file) if file else {}, drop_none(overrides))
    teacher_path = (asked.get("distill") or {}).get("teacher", DistillConfig().teacher)
    teacher = load_teacher(teacher_path)
    for key, value in (asked.get("features") or {}).items():
        theirs = getattr(teacher.features, key, value)  # unknown keys: left to validation
        if theirs != value:
            raise ConfigError(
                f"features.{key}={value} differs from the teacher's {theirs} ({teacher_path}): "
                "a student must see the teacher's features"
            )
    keyword = (asked.get("data") or {}).get("keyword")
    if keyword is not None and keyword != teacher.keyword:
        raise ConfigError(
            f"data.keyword={keyword!r} but the teacher spots {teacher.keyword!r}; "
            "train a teacher for that keyword first"
        )
    trained_on = teacher.provenance.data or DataConfig(keyword=teacher.keyword)
    base = {
        "features": teacher.features.model_dump(mode="json"),
        "data": trained_on.model_dump(
            mode="json", include={"path", "split", "split_seed", "val_fraction"}
        )
        | {"keyword": teacher.keyword},
        "model": dict(STUDENT_DEFAULTS),
        "distill": {},
    }
    cfg = build_config(RunConfig, file, overrides, base=base)
    if "name" not in asked:
        cfg.name = default_student_name(cfg)
    warnings = []
    student_params = count_parameters(CRNN(cfg.model, cfg.features.n_mels))
    teacher_params = sum(t.numel() for t in teacher.state_dict.values())
    if student_params >= teacher_params:
        warnings.append(
            f"the student ({student_params:,} parameters) is not smaller than its "
            f"teacher ({teacher_params:,}); distilling anyway"
        )
    return cfg, warnings


def default_student_name(cfg: RunConfig) -> str:
    d = cfg.distill
    name = f"student-{d.loss}" + (f"-T{d.temperature:g}" if d.loss != "mse" else "")
    name += f"-a{d.alpha:g}" if d.alpha < 1 else ""
    name += f"-att{d.attention_weight:g}" if d.attention_weight > 0 else ""
    name += f"-sim{d.similarity_weight:g}" if d.similarity_weight > 0 else ""
    name += f"-mix{d.mixup:g}" if d.mixup > 0 else ""
    name += f"-hn{d.hard_negatives:g}" if d.hard_negatives > 0 else ""
    return name + ("-amp" if cfg.train.amp else "")
