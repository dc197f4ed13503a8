"""Self-describing checkpoints: config + kind + weights + metrics, loadable with no flags.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)`: a shared `.pt` can never run code on load. Every write goes to a
temp file, is fsynced, then renamed, so a crash never leaves a truncated checkpoint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwscli import __version__
from kwscli.config import FeatureConfig, ModelConfig, check_model_fits
from kwscli.errors import CheckpointError
from kwscli.files import atomic_torch_save

FORMAT = "kws-checkpoint"
FORMAT_VERSION = 1
KINDS = ("teacher", "student", "int8", "fp16")


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
    info: dict[str, Any] = field(default_factory=dict)  # provenance: data, teacher, loss...
    kws_version: str = __version__
    created: str = ""
    path: Path | None = None

    @property
    def label(self) -> str:
        """The kind, with an int8 model's conv precision where it is not float32."""
        conv = self.info.get("int8", {}).get("conv", "float") if self.kind == "int8" else "float"
        return self.kind if conv == "float" else f"{self.kind} (conv {conv})"

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
            "info": self.info,
            "state_dict": self.state_dict,
        }


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    if ckpt.kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {ckpt.kind!r}")
    path = Path(path)
    atomic_torch_save(ckpt.to_dict(), path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a kws checkpoint; anything else raises CheckpointError with one line."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a .pt checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a kws checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):  # a pickle that names a callable to run
            raise CheckpointError(
                f"{path}: refused: it holds Python objects that would run code when loaded "
                "(kws checkpoints never do; only load files you trust with other tools)"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, or not a torch file at all)"
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
            info=raw.get("info") or {},
            kws_version=raw.get("kws_version", "?"),
            created=raw.get("created", ""),
            path=path,
        )
    except KeyError as exc:
        raise CheckpointError(f"{path}: damaged kws checkpoint: no {exc.args[0]!r} entry") from None
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
    return ckpt


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
