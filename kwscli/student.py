"""A student's settings: the teacher's features, keyword and dataset, the SPEC's final student
shape, a name from its loss; and the checkpoint that may teach."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.config import DataConfig, DistillConfig, FeatureConfig, RunConfig
from kwscli.errors import ConfigError, KwsError
from kwscli.models.crnn import CRNN, count_parameters


def load_teacher(path: str | Path) -> Checkpoint:
    if str(path) == DistillConfig().teacher and not Path(path).exists():
        raise KwsError(
            f"{path}: no teacher trained yet: run `kws teacher` first, or pass --teacher FILE.pt "
            "(`--teacher teacher` distils the bundled one)"
        )
    ckpt = load_checkpoint(path)
    if ckpt.kind not in ("teacher", "student"):
        raise KwsError(
            f"{path}: an {ckpt.kind} checkpoint cannot teach; pass a float teacher "
            "(kind teacher or student) with --teacher"
        )
    return ckpt


@dataclass(frozen=True)
class TeacherFacts:
    """What a student takes from its teacher: features, keyword, dataset and split, and its size
    (to warn about a student that is not smaller)."""

    path: str
    features: FeatureConfig
    keyword: str
    data: DataConfig
    params: int

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> TeacherFacts:
        teacher = load_teacher(path)
        return cls(
            str(path),
            teacher.features,
            teacher.keyword,
            teacher.provenance.data or DataConfig(keyword=teacher.keyword),
            sum(t.numel() for t in teacher.state_dict.values()),
        )

    @classmethod
    def of_config(cls, cfg: RunConfig, path: str | Path) -> TeacherFacts:
        """A teacher not trained yet (a sweep's): what its checkpoint at `path` will say (its
        dataset recorded by its absolute path, as training records it)."""
        data = cfg.data.model_copy(update={"path": str(Path(cfg.data.path).resolve())})
        params = count_parameters(CRNN(cfg.model, cfg.features.n_mels))
        return cls(str(path), cfg.features, cfg.data.keyword, data, params)


def student_config(
    file: str | Path | None, overrides: dict, teacher: TeacherFacts | None = None
) -> tuple[RunConfig, list[str]]:
    """Resolve a student's settings: its features and keyword are the teacher's (asking for
    different ones is an error, not a silent mismatch); its dataset and split default to the
    teacher's, so it validates on the same clips; its model defaults to the user's final student
    of SPEC §1. The teacher is read from its checkpoint (`distill.teacher`) unless given.
    Returns the config and any warnings."""
    from kwscli.config import (
        STUDENT_DEFAULTS,
        build_config,
        deep_merge,
        drop_none,
        read_config_file,
    )

    asked = deep_merge(read_config_file(file) if file else {}, drop_none(overrides))
    teacher_path = (asked.get("distill") or {}).get("teacher", DistillConfig().teacher)
    if teacher is None:
        teacher = TeacherFacts.of_checkpoint(teacher_path)
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
    base = {
        "features": teacher.features.model_dump(mode="json"),
        "data": teacher.data.model_dump(
            mode="json", include={"path", "split", "split_seed", "val_fraction"}
        )
        | {"keyword": teacher.keyword},
        **{section: dict(values) for section, values in STUDENT_DEFAULTS.items()},
        "distill": {},
    }
    cfg = build_config(RunConfig, file, overrides, base=base)
    if "name" not in asked:
        cfg.name = default_student_name(cfg)
    warnings = []
    student_params = count_parameters(CRNN(cfg.model, cfg.features.n_mels))
    if student_params >= teacher.params:
        warnings.append(
            f"the student ({student_params:,} parameters) is not smaller than its "
            f"teacher ({teacher.params:,}); distilling anyway"
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
