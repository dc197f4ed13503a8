"""Typed, validated settings: one pydantic model per concern, defaults = the course teacher.

Settings come from a YAML/JSON file and/or CLI flags (flags win). Everything is validated before
any work starts; a bad value becomes `field: message` lines (ConfigError, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kwscli.errors import ConfigError

SAMPLE_RATE = 16_000  # Hz: Speech Commands' rate, the default of every model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureConfig(_Strict):
    """Log-mel front end (SPEC §2). A checkpoint carries it, so detection matches training."""

    sample_rate: int = Field(SAMPLE_RATE, gt=0, le=384_000, description="Audio sample rate in Hz.")
    n_fft: int = Field(400, gt=0, le=65_536, description="FFT size in samples.")
    win_length: int = Field(400, gt=0, le=65_536, description="Window length in samples.")
    hop_length: int = Field(
        160, gt=0, le=65_536, description="Hop in samples: 160 = 10 ms at 16 kHz."
    )
    n_mels: int = Field(40, gt=0, le=256, description="Mel bands: the model's input height.")
    clip_seconds: float = Field(1.0, gt=0, le=10, description="Training clip length in seconds.")

    @model_validator(mode="after")
    def _window_fits(self) -> FeatureConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} must be ≤ n_fft={self.n_fft}")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels={self.n_mels} must be ≤ n_fft//2+1={self.n_fft // 2 + 1}")
        return self

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def clip_frames(self) -> int:
        return self.frames(self.clip_seconds)

    def frames(self, seconds: float) -> int:
        """Log-mel frames of `seconds` of audio (center=True STFT: samples // hop + 1)."""
        return int(round(self.sample_rate * seconds)) // self.hop_length + 1


Positive = Annotated[int, Field(ge=1, le=1000)]


class ModelConfig(_Strict):
    """The CRNN (SPEC §2): teacher and students are configurations of the same class."""

    # upper bounds keep a typo (or a doctored checkpoint) from asking for gigabytes: the
    # largest allowed shape is still ~100x the course teacher
    cnn_out_channels: int = Field(8, ge=1, le=512, description="Conv output channels.")
    kernel_size: tuple[Positive, Positive] = Field((5, 20), description="Conv kernel (freq, time).")
    stride: tuple[Positive, Positive] = Field((2, 8), description="Conv stride (freq, time).")
    hidden_size: int = Field(64, ge=1, le=2048, description="GRU hidden size.")
    gru_num_layers: int = Field(2, ge=1, le=8, description="Stacked GRU layers.")
    bidirectional: bool = Field(
        False, description="Bidirectional GRU (streams in window mode only, not with carry)."
    )
    num_classes: int = Field(2, ge=2, le=1000, description="Output classes: 2 = keyword vs rest.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout between GRU layers.")


class TrainConfig(_Strict):
    """Optimisation settings (course defaults: Adam 3e-4, wd 1e-5, batch 128, 20 epochs)."""

    batch_size: int = Field(128, ge=1, description="Clips per step.")
    learning_rate: float = Field(3e-4, gt=0, le=1, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="Adam weight decay.")
    num_epochs: int = Field(20, ge=1, description="Passes over the (balanced) training set.")
    grad_clip: float = Field(5.0, gt=0, description="Gradient-norm clip.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds sampling, augmentation, init.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto|cpu|cuda.")
    augment: bool = Field(True, description="Noise/gain/SpecAugment on training batches.")
    amp: bool = Field(False, description="Mixed precision: fp16 autocast on CUDA, bf16 on CPU.")
    epoch_size: int | None = Field(
        None, ge=1, description="Clips drawn per epoch (default: the training-set size)."
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant, or cosine decay from learning_rate to 0 over the epochs."
    )


class DataConfig(_Strict):
    """Which dataset and split (Speech Commands layout: <word>/<speaker>_nohash_<n>.wav)."""

    path: str = Field("data/synth", description="Dataset root folder.")
    keyword: str = Field("sheila", min_length=1, description="Folder name of the keyword.")
    split: Literal["official", "random"] = Field(
        "official", description="official = validation_list/testing_list; random = course 80/20."
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Validation share for split=random.")
    split_seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Seed of split=random (kept apart from train.seed, so "
        "a student trained with another seed validates on its teacher's clips).",
    )
    select_on: str | None = Field(
        None,
        description="A small real dataset (Speech Commands layout, every clip used) that picks "
        "the best epoch by its au_fa_fr instead of the validation split: synthetic validation "
        "cannot tell when a model stops improving on real voices.",
    )


LOSSES = ("mse", "ce", "kl")  # the logit losses of kwscli/distill.py


class DistillConfig(_Strict):
    """How a student learns from its teacher (see kwscli/distill.py for each formula)."""

    teacher: str = Field("runs/teacher/model.pt", description="Teacher checkpoint.")
    loss: Literal[LOSSES] = Field("kl", description="Logit loss: mse, ce or kl.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T (ce, kl).")
    alpha: float = Field(1.0, ge=0, le=1, description="alpha*distill + (1-alpha)*CE(labels).")
    attention_weight: float = Field(
        0.0, ge=0, description="Weight of attention distillation (0 = off)."
    )
    similarity_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of similarity-preserving distillation of the pooled embedding "
        "(which clips of a batch the teacher finds alike). 0 = off.",
    )
    mixup: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of each batch replaced by mixtures of two clips, which the teacher "
        "labels (function matching; needs alpha 1). 0 = off.",
    )

    hard_negatives: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the non-keyword draws picked in proportion to the teacher's "
        "P(keyword) on each clip: the confusable words. 0 = uniform (the course's sampler).",
    )

    @model_validator(mode="after")
    def _mixup_needs_teacher_labels(self) -> DistillConfig:
        if self.mixup > 0 and self.alpha < 1:
            raise ValueError(
                f"mixup={self.mixup:g} needs alpha=1: a mixture of two clips has no hard label, "
                "only the teacher's"
            )
        return self


# The user's final student (SPEC §1): the default shape `kws distill` trains.
STUDENT_DEFAULTS = {
    "cnn_out_channels": 3,
    "kernel_size": (7, 20),
    "stride": (7, 12),
    "hidden_size": 30,
    "gru_num_layers": 2,
}


class RunConfig(_Strict):
    """Everything one training run needs; saved beside its checkpoint."""

    name: str = Field("teacher", pattern=r"^[A-Za-z0-9._-]+$", description="Run folder name.")
    runs_dir: str = Field("runs", description="Where run folders go.")
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig | None = Field(None, description="Set for a student run.")

    @field_validator("name")
    @classmethod
    def _stays_inside_runs_dir(cls, name: str) -> str:
        if name in (".", ".."):
            raise ValueError(f"{name!r} would leave the runs folder; pick a real name")
        return name

    @model_validator(mode="after")
    def _kernel_fits_input(self) -> RunConfig:
        check_model_fits(self.model, self.features)
        return self


# ---------------------------------------------------------------- shapes (the one copy)


def conv_steps(length: int, kernel: int, stride: int) -> int:
    """Outputs of an unpadded conv along one axis of `length` inputs (none when it is shorter
    than the kernel): (length - kernel) // stride + 1."""
    return 0 if length < kernel else (length - kernel) // stride + 1


def conv_span(steps: int, kernel: int, stride: int) -> int:
    """Inputs that `steps` consecutive conv outputs read: (steps - 1) * stride + kernel."""
    return (steps - 1) * stride + kernel


def conv_centre(step, kernel: int, stride: int):
    """The input position (fractional) at the centre of conv output `step`'s receptive field:
    step * stride + (kernel - 1) / 2. Works on ints, numpy arrays and tensors."""
    return step * stride + (kernel - 1) / 2


def conv_output_shape(model: ModelConfig, features: FeatureConfig, frames: int) -> tuple[int, int]:
    """(freq, time) after the unpadded conv for `frames` log-mel frames."""
    return (
        conv_steps(features.n_mels, model.kernel_size[0], model.stride[0]),
        conv_steps(frames, model.kernel_size[1], model.stride[1]),
    )


def conv_width(model: ModelConfig, n_mels: int) -> int:
    """Features per conv time step, the GRU's input size: channels × conv output rows."""
    return model.cnn_out_channels * conv_steps(n_mels, model.kernel_size[0], model.stride[0])


def check_model_fits(model: ModelConfig, features: FeatureConfig) -> None:
    """Reject impossible conv shapes: a kernel larger than the input (no output rows or time
    steps), or a stride larger than the kernel (input the model would never see)."""
    if model.kernel_size[0] > features.n_mels:
        raise ValueError(
            f"model.kernel_size[0]={model.kernel_size[0]} is larger than "
            f"features.n_mels={features.n_mels}: the conv would have no output rows"
        )
    if model.kernel_size[1] > features.clip_frames:
        raise ValueError(
            f"model.kernel_size[1]={model.kernel_size[1]} is larger than the "
            f"{features.clip_frames} frames of a {features.clip_seconds:g} s clip: "
            "the conv would have no time steps"
        )
    for axis, name in ((0, "freq"), (1, "time")):
        if model.stride[axis] > model.kernel_size[axis]:
            raise ValueError(
                f"model.stride[{axis}]={model.stride[axis]} is larger than "
                f"model.kernel_size[{axis}]={model.kernel_size[axis]}: the conv would skip "
                f"{name} bins it never sees; use a stride ≤ the kernel"
            )


# ---------------------------------------------------------------- loading and overrides


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; values in `overrides` win."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    model_cls: type[BaseModel],
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
):
    """Defaults ← `base` ← config file ← CLI overrides (None values ignored), validated once."""
    data: dict[str, Any] = dict(base or {})
    if file is not None:
        data = deep_merge(data, read_config_file(file))
    data = deep_merge(data, drop_none(overrides or {}))
    return validate(model_cls, data)


def validate(model_cls: type[BaseModel], data: dict[str, Any]):
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One `field: message` line per problem, e.g. `model.stride.1: must be ≥ 1`."""
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        loc = loc.lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling; `--print-config` lists valid ones)"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out
