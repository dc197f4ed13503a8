"""Self-describing checkpoints: config + kind + weights + metrics, loadable with no flags.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a shared `.pt` can never run code on load. Every write goes to a
temp file, is fsynced, then renamed, so a crash never leaves a truncated checkpoint.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kwscli.bundled import BUNDLED_NAMES, bundled_model
from kwscli.config import (
    ConvPrecision,
    DataConfig,
    DistillConfig,
    FeatureConfig,
    ModelConfig,
    TrainConfig,
    check_model_fits,
    format_validation_error,
)
from kwscli.errors import CheckpointError
from kwscli.files import atomic_torch_save
from kwscli.version import __version__

FORMAT = "kws-checkpoint"
FORMAT_VERSION = 1
KINDS = ("teacher", "student", "int8", "fp16")


class _Record(BaseModel):
    # provenance from another kws version may hold keys this one does not know: dropped, not
    # refused, so an older or newer checkpoint still loads
    model_config = ConfigDict(extra="ignore")


class TeacherInfo(_Record):
    """The teacher a student was distilled from."""

    path: str
    model: ModelConfig
    metrics: dict[str, Any] = {}


class SourceInfo(_Record):
    """The checkpoint a compressed one was made from."""

    path: str | None = None
    kind: str
    metrics: dict[str, Any] = {}


class Int8Info(_Record):
    """Which weights of an int8 checkpoint are integers, and how."""

    quantized: list[str] = []
    scheme: str = "per-tensor affine qint8"
    conv: ConvPrecision = ConvPrecision.float


class Provenance(_Record):
    """Where a checkpoint came from, typed: the settings of the run that trained it (the same
    pydantic models as `--config`), the loss, the teacher, the source of a compressed copy, and
    the calibration (`kws calibrate`'s report, with the threshold it chose)."""

    data: DataConfig | None = None
    train: TrainConfig | None = None
    distill: DistillConfig | None = None
    loss: str | None = None  # a label such as "kl+attention"
    teacher: TeacherInfo | None = None
    source: SourceInfo | None = None
    int8: Int8Info | None = None
    calibration: dict[str, Any] | None = None
    calibration_before_compression: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def read_provenance(info: dict[str, Any], keyword: str) -> Provenance:
    """A checkpoint's provenance; format 1 before typed provenance kept the data settings flat
    (`data` a path, `split`, `split_seed`, `val_fraction` beside it): read as `data`."""
    info = dict(info)
    if isinstance(info.get("data"), str):
        data = {"path": info.pop("data"), "keyword": keyword}
        for key in ("split", "split_seed", "val_fraction"):
            if key in info:
                data[key] = info.pop(key)
        info["data"] = data
    return Provenance.model_validate(info)


@dataclass
class Checkpoint:
    """What a `.pt` from kws holds. `state_dict` is the model's weights."""

    kind: str
    model: ModelConfig
    features: FeatureConfig
    keyword: str
    state_dict: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    provenance: Provenance = field(default_factory=Provenance)
    kws_version: str = __version__
    created: str = ""
    path: Path | None = None

    @property
    def label(self) -> str:
        """The kind, with an int8 model's conv precision where it is not float32."""
        int8 = self.provenance.int8
        conv = int8.conv if self.kind == "int8" and int8 else ConvPrecision.float
        return self.kind if conv == ConvPrecision.float else f"{self.kind} (conv {conv})"

    @property
    def data_path(self) -> str | None:
        """The dataset it was trained on, if known."""
        return self.provenance.data.path if self.provenance.data else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "kws_version": self.kws_version,
            "created": self.created
            or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "keyword": self.keyword,
            "model": self.model.model_dump(mode="json"),
            "features": self.features.model_dump(mode="json"),
            "metrics": self.metrics,
            "threshold": self.threshold,
            "info": self.provenance.to_dict(),
            "state_dict": self.state_dict,
        }


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    if ckpt.kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {ckpt.kind!r}")
    path = Path(path)
    atomic_torch_save(ckpt.to_dict(), path)
    return path


def resolve_model(path: str | Path) -> Path:
    """A checkpoint path, or the name of a bundled model (`teacher`, `student`) where no file
    of that name exists: `kws detect --model teacher`, `kws distill --teacher teacher`."""
    path = Path(path)
    if str(path) in BUNDLED_NAMES and not path.exists():
        return bundled_model(str(path))
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a kws checkpoint (a path, or a bundled model's name); anything else
    raises CheckpointError with one line."""
    import torch

    path = resolve_model(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a .pt checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a kws checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on foreign files
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):  # a pickle that names a callable to run
            raise CheckpointError(
                f"{path}: refused: it holds Python objects that would run code when loaded "
                "(kws checkpoints never do; only load files you trust with other tools)"
            ) from None
        raise CheckpointError(  # nothing of it ran: torch's safe loader stops at the first
            f"{path}: not a readable checkpoint (truncated, a plain Python pickle, or not a "
            "torch file at all); nothing in it was run"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a kws checkpoint (a plain state_dict or another tool's file?); "
            "make one with `kws teacher` or `kws distill`"
        )
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer kws (format {raw['format_version']}); upgrade kws"
        )
    try:
        ckpt = Checkpoint(
            kind=raw["kind"],
            model=ModelConfig.model_validate(raw["model"]),
            features=FeatureConfig.model_validate(raw["features"]),
            keyword=raw["keyword"],
            state_dict=raw["state_dict"],
            metrics=raw.get("metrics") or {},
            threshold=raw.get("threshold"),
            provenance=read_provenance(raw.get("info") or {}, raw["keyword"]),
            kws_version=raw.get("kws_version", "?"),
            created=raw.get("created", ""),
            path=path,
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: damaged kws checkpoint: no {exc.args[0]!r} entry") from None
    except ValidationError as exc:
        first = format_validation_error(exc).splitlines()[0]
        raise CheckpointError(f"{path}: damaged kws checkpoint ({first})") from None
    except Exception as exc:
        raise CheckpointError(
            f"{path}: damaged kws checkpoint ({exc.__class__.__name__})"
        ) from None
    try:
        check_model_fits(ckpt.model, ckpt.features)
    except ValueError as exc:
        raise CheckpointError(f"{path}: impossible model: {exc}") from None
    if ckpt.kind not in KINDS:
        raise CheckpointError(f"{path}: unknown kind {ckpt.kind!r} (expected {', '.join(KINDS)})")
    check_contents(ckpt)
    return ckpt


def check_contents(ckpt: Checkpoint) -> None:
    """What a doctored or damaged file can hold that the settings models do not catch: a
    keyword that is no word, a threshold that is no probability, weights that are not tensors
    or not finite (NaN weights would score silently)."""
    import math

    import torch

    path = ckpt.path
    if not isinstance(ckpt.keyword, str) or not ckpt.keyword.strip() or "/" in ckpt.keyword:
        raise CheckpointError(f"{path}: damaged kws checkpoint (keyword {ckpt.keyword!r})")
    t = ckpt.threshold
    if t is not None and not (isinstance(t, int | float) and math.isfinite(t) and 0 < t < 1):
        raise CheckpointError(
            f"{path}: damaged kws checkpoint (threshold {t!r} is not a probability); "
            "recalibrate it with kws calibrate"
        )
    if not isinstance(ckpt.state_dict, dict) or not ckpt.state_dict:
        raise CheckpointError(f"{path}: damaged kws checkpoint (no weights)")
    for name, value in ckpt.state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: damaged kws checkpoint (weight {name!r} is no tensor)")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(
                f"{path}: damaged kws checkpoint (weight {name!r} holds NaN or infinity)"
            )


def without_machine_paths(info: Any, root: Path) -> Any:
    """`info` with every absolute path made relative to `root` (the project) when inside it, else
    cut to its last part: for checkpoints shipped to other machines."""
    if isinstance(info, dict):
        return {k: without_machine_paths(v, root) for k, v in info.items()}
    if isinstance(info, list):
        return [without_machine_paths(v, root) for v in info]
    if isinstance(info, str) and Path(info).is_absolute():
        path = Path(info)
        return str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    return info
