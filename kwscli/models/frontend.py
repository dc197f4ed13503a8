"""The log-mel front end (SPEC §2), written once: training features, augmentation, the streaming
detector and the TorchScript export compute their input here; the ONNX file carries this
module's STFT window and mel filterbank, from which the torch-free runtime computes the same
numbers in numpy (kwscli/runtime.py `numpy_log_mel`, tested equal in tests/test_frontend.py).

    log(clamp(MelSpectrogram(x), 1e-9, 1e9))

`LogMel` turns samples into frames with no padding: frame k covers samples [k·hop, k·hop + n_fft).
A stream cannot see the future, so that is the streaming form; offline clips are reflect-padded by
n_fft // 2 on both sides first (`centred`), which is what torchaudio's MelSpectrogram(center=True)
does, so `log_mel` equals the course's torchaudio recipe (pinned in tests/test_audio.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kwscli.config import FeatureConfig
from kwscli.shapes import LOG_CEIL, LOG_FLOOR, LOG_FLOOR_LOG, conv_steps

__all__ = ["LOG_FLOOR_LOG", "LogMel", "centred", "log_mel", "mel_filterbank", "mel_power", "to_log"]


def to_log(power: torch.Tensor, floor: float = LOG_FLOOR, ceil: float = LOG_CEIL) -> torch.Tensor:
    """Mel power → the model's input: log(clamp(power, 1e-9, 1e9)). (The bounds are default
    arguments because TorchScript reads those, not module globals.)"""
    return torch.log(power.clamp(floor, ceil))


class LogMel(nn.Module):
    """Samples (L,) or (B, L) → log-mel (n_mels, n) or (B, n_mels, n), one frame per hop, unpadded.

    TorchScript-able; the STFT window (win_length Hann centred in n_fft, as torch.stft pads it)
    and mel filterbank (`mel_filterbank`) are buffers."""

    def __init__(self, features: FeatureConfig) -> None:
        super().__init__()
        f = features
        self.n_fft, self.hop, self.n_mels = f.n_fft, f.hop_length, f.n_mels
        pad = (f.n_fft - f.win_length) // 2
        window = nn.functional.pad(
            torch.hann_window(f.win_length), (pad, f.n_fft - f.win_length - pad)
        )
        self.register_buffer("window", window)
        self.register_buffer("fb", mel_filterbank(f.n_fft // 2 + 1, f.n_mels, f.sample_rate))

    def frames(self, samples: int) -> int:
        """Whole frames in `samples` samples (framing is a conv with kernel n_fft, stride hop)."""
        return conv_steps(samples, self.n_fft, self.hop)

    def power(self, samples: torch.Tensor) -> torch.Tensor:
        """Mel power (…, n_mels, n) of every whole frame of `samples`."""
        spec = torch.stft(
            samples, self.n_fft, self.hop, self.n_fft, self.window, center=False,
            return_complex=True,
        )  # fmt: skip
        power = spec.real.pow(2) + spec.imag.pow(2)  # (…, F, n)
        return torch.matmul(self.fb.transpose(0, 1), power)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return to_log(self.power(samples))


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular mel filters (n_freqs, n_mels) from 0 Hz to Nyquist on the HTK mel scale, not
    normalised: torchaudio's `melscale_fbanks` defaults, computed the same way (pinned equal in
    tests/test_frontend.py), so that detection need not import torchaudio (~0.3 s)."""
    nyquist = sample_rate // 2
    freqs = torch.linspace(0, nyquist, n_freqs)
    top = 2595.0 * math.log10(1.0 + nyquist / 700.0)  # Hz → mel (HTK)
    edges = 700.0 * (10.0 ** (torch.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)
    width = edges[1:] - edges[:-1]  # (n_mels + 1)
    slopes = edges[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def centred(waveform: torch.Tensor, features: FeatureConfig) -> torch.Tensor:
    """Reflect-pad n_fft // 2 samples on both sides (torch.stft's center=True), so frame t is
    centred on sample t·hop: `features.frames(seconds)` frames per clip."""
    p = features.n_fft // 2
    return nn.functional.pad(waveform.unsqueeze(-2), (p, p), mode="reflect").squeeze(-2)


def mel_power(waveform: torch.Tensor, features: FeatureConfig) -> torch.Tensor:
    """Centred mel power (B, n_mels, T) of waveforms (B, samples)."""
    return _front_end(features, waveform.device).power(centred(waveform, features))


def log_mel(waveform: torch.Tensor, features: FeatureConfig) -> torch.Tensor:
    """The model's input for whole clips: centred log-mel (B, n_mels, T) of (B, samples)."""
    return to_log(mel_power(waveform, features))


_CACHE: dict = {}


def _front_end(features: FeatureConfig, device: torch.device) -> LogMel:
    key = (features.model_dump_json(), str(device))
    if key not in _CACHE:
        _CACHE[key] = LogMel(features).to(device)
    return _CACHE[key]
