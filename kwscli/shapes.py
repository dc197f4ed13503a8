"""The arithmetic of shapes and time: the sample rate, the log-mel floor, conv steps, and where
a streaming model's windows fall. Training, the torch detector, the exported models and the
torch-free runtime all read it from here, so they cannot drift; plain Python (no pydantic, no
torch, no numpy), so the runtime imports it alone. The settings it reads (`FeatureConfig`,
`ModelConfig`) are declared in kwscli/config.py; anything with their attributes will do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class FrontEnd(Protocol):
    """What the arithmetic reads of a front end: kwscli.config.FeatureConfig, or the runtime's
    `StoredFrontEnd` (read from an exported file)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int


class ConvLayout(Protocol):
    """What the arithmetic reads of a model's conv: kwscli.config.ModelConfig."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    cnn_out_channels: int


SAMPLE_RATE = 16_000  # Hz: Speech Commands' rate, the default of every model
CLIP_SECONDS = 1.0  # Speech Commands' clip length: the default training clip
CLIP_SAMPLES = round(SAMPLE_RATE * CLIP_SECONDS)
LOG_FLOOR, LOG_CEIL = 1e-9, 1e9  # the log-mel is log(clamp(mel power, 1e-9, 1e9)), as the course
LOG_FLOOR_LOG = math.log(LOG_FLOOR)  # the log-mel value of digital silence


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


def conv_output_shape(model: ConvLayout, features: FrontEnd, frames: int) -> tuple[int, int]:
    """(freq, time) after the unpadded conv for `frames` log-mel frames."""
    return (
        conv_steps(features.n_mels, model.kernel_size[0], model.stride[0]),
        conv_steps(frames, model.kernel_size[1], model.stride[1]),
    )


def conv_width(model: ConvLayout, n_mels: int) -> int:
    """Features per conv time step, the GRU's input size: channels × conv output rows."""
    return model.cnn_out_channels * conv_steps(n_mels, model.kernel_size[0], model.stride[0])


@dataclass(frozen=True)
class StreamGeometry:
    """Where a streaming model's windows fall: in conv steps, log-mel frames, samples, seconds.
    The torch detector, the TorchScript module, the ONNX export and the torch-free runtime all
    read it from here. The times work on ints and numpy arrays alike."""

    kernel: int  # conv kernel along time, in frames
    stride: int  # conv stride along time: one output (step) every `stride` frames
    window: int  # conv steps one output pools over
    features: FrontEnd

    @classmethod
    def of(
        cls, model: ConvLayout, features: FrontEnd, window_frames: int | None = None
    ) -> StreamGeometry:
        kernel, stride = model.kernel_size[1], model.stride[1]
        frames = window_frames or features.clip_frames  # max_window_length
        window = conv_steps(frames, kernel, stride)
        if window < 1:
            raise ValueError(f"window of {frames} frames is shorter than the conv kernel")
        return cls(kernel, stride, window, features)

    @property
    def window_frames(self) -> int:
        """Log-mel frames one output reads."""
        return conv_span(self.window, self.kernel, self.stride)

    @property
    def prefix_frames(self) -> int:
        """Frames of silence a stream starts with: the first real step then ends a full window."""
        return self.window_frames - self.stride

    @property
    def window_samples(self) -> int:
        f = self.features
        return conv_span(self.window_frames, f.n_fft, f.hop_length)

    @property
    def step_samples(self) -> int:
        return self.stride * self.features.hop_length

    @property
    def window_seconds(self) -> float:
        """Seconds of audio one output looks at."""
        return self.window_frames * self.features.hop_length / self.features.sample_rate

    @property
    def step_seconds(self) -> float:
        """Seconds between two conv steps (two outputs)."""
        return self.stride * self.features.hop_length / self.features.sample_rate

    def end_time(self, steps):
        """Stream time (s) at the end of conv step `steps`' receptive field."""
        f = self.features
        last_frame = steps * self.stride + self.kernel - 1 - self.prefix_frames
        return (last_frame * f.hop_length + f.n_fft) / f.sample_rate

    def centre_time(self, steps):
        f = self.features
        centre_frame = conv_centre(steps, self.kernel, self.stride) - self.prefix_frames
        return (centre_frame * f.hop_length + f.n_fft / 2) / f.sample_rate
