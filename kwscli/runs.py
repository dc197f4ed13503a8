"""Every run a user made, as one comparable list (`kws runs`): nothing trained is ever lost."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.distill import describe
from kwscli.errors import CheckpointError, ConfigError, KwsError
from kwscli.evaluate import model_cost
from kwscli.models.crnn import CRNN

SORT_KEYS = ("name", "kind", "au_fa_fr", "params", "bytes", "macs_2s", "created")


@dataclass
class RunSummary:
    name: str
    path: str
    kind: str
    loss: str
    temperature: float | None
    alpha: float | None
    attention_weight: float | None
    augment: bool | None  # trained with noise/gain/SpecAugment (None: not recorded)
    params: int
    bytes: int
    macs_2s: int
    au_fa_fr: float | None
    epoch: int | None
    created: str
    memory_ratio: float | None = None  # teacher bytes / this model's bytes (higher = smaller)
    macs_ratio: float | None = None  # teacher MACs / this model's MACs
    au_fa_fr_ratio: float | None = None  # this au_fa_fr / teacher's (≤ 1.1 is the course target)

    def to_dict(self) -> dict:
        return asdict(self)


def list_runs(runs_dir: str | Path, sort: str = "created") -> tuple[list[RunSummary], list[str]]:
    """Every kws checkpoint one level under `runs_dir`, sorted; and a line per .pt file that
    could not be read (listed, never fatal)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise KwsError(f"{runs_dir}: no such folder of runs (train one with `kws teacher`)")
    if sort not in SORT_KEYS:
        raise ConfigError(f"--sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
    out, problems = [], []
    for file in sorted(runs_dir.glob("*/*.pt")):
        if file.name == "last.pt":
            continue
        try:
            out.append(summarize(load_checkpoint(file), file))
        except CheckpointError as exc:
            problems.append(str(exc))
    return sorted(out, key=lambda r: _sort_value(r, sort)), problems


def summarize(ckpt: Checkpoint, file: Path) -> RunSummary:
    cost = model_cost(ckpt)
    p = ckpt.provenance
    d = p.distill
    if d:  # derived from the settings, so older checkpoints read the same way
        label, uses_t = describe(d.loss, d.alpha, d.attention_weight, d.similarity_weight)
    else:
        label, uses_t = p.loss or "?", False
    run = RunSummary(
        name=file.parent.name if file.name == "model.pt" else f"{file.parent.name}/{file.name}",
        path=str(file),
        kind=ckpt.kind,
        loss=label,
        temperature=d.temperature if d and uses_t else None,
        alpha=d.alpha if d else None,
        attention_weight=d.attention_weight if d else None,
        augment=p.train.augment if p.train else None,
        params=cost.params,
        bytes=cost.size_bytes,
        macs_2s=cost.macs_2s,
        au_fa_fr=ckpt.metrics.get("val_au_fa_fr"),
        epoch=ckpt.metrics.get("epoch"),
        created=ckpt.created,
    )
    teacher = p.teacher
    if teacher:
        # the teacher's shape is recorded in the student: its cost needs no teacher file
        shape = Checkpoint("teacher", teacher.model, ckpt.features, ckpt.keyword, {})
        t_cost = model_cost(shape, CRNN(shape.model, shape.features.n_mels))
        run.memory_ratio = t_cost.size_bytes / cost.size_bytes
        run.macs_ratio = t_cost.macs_2s / cost.macs_2s
        t_score = teacher.metrics.get("val_au_fa_fr")
        if t_score and run.au_fa_fr is not None:
            run.au_fa_fr_ratio = run.au_fa_fr / t_score
    return run


def _sort_value(r: RunSummary, key: str):
    v = getattr(r, key)
    return (v is None, v if v is not None else 0)
