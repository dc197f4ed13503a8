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

import torch
from torch import nn

from kwscli.config import FeatureConfig
from kwscli.shapes import LOG_CEIL, LOG_FLOOR, LOG_FLOOR_LOG, conv_steps

__all__ = ["LOG_FLOOR_LOG", "LogMel", "centred", "log_mel", "mel_power", "to_log"]


def to_log(power: torch.Tensor, floor: float = LOG_FLOOR, ceil: float = LOG_CEIL) -> torch.Tensor:
    """Mel power → the model's input: log(clamp(power, 1e-9, 1e9)). (The bounds are default
    arguments because TorchScript reads those, not module globals.)"""
    return torch.log(power.clamp(floor, ceil))


class LogMel(nn.Module):
    """Samples (L,) or (B, L) → log-mel (n_mels, n) or (B, n_mels, n), one frame per hop, unpadded.

    TorchScript-able; the STFT window (win_length Hann centred in n_fft, as torch.stft pads it)
    and mel filterbank (HTK, no norm: torchaudio's defaults) are buffers."""

    def __init__(self, features: FeatureConfig) -> None:
        super().__init__()
        import torchaudio

        f = features
        self.n_fft, self.hop, self.n_mels = f.n_fft, f.hop_length, f.n_mels
        pad = (f.n_fft - f.win_length) // 2
        window = nn.functional.pad(
            torch.hann_window(f.win_length), (pad, f.n_fft - f.win_length - pad)
        )
        fb = torchaudio.functional.melscale_fbanks(
            f.n_fft // 2 + 1, 0.0, float(f.sample_rate // 2), f.n_mels, f.sample_rate
        )
        self.register_buffer("window", window)
        self.register_buffer("fb", fb)  # (freqs, n_mels)

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
