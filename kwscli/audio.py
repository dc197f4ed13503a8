"""Audio constants, wav I/O (soundfile) and the log-mel front end shared by training and detection.

torchaudio 2.9+ has no audio I/O of its own, so every read and write goes through soundfile;
torchaudio is used for transforms only (resampling, MelSpectrogram).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from kwscli.errors import AudioError
from kwscli.files import atomic_write

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
CLIP_SECONDS = 1.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
LOG_FLOOR = 1e-9  # log(clamp(x, 1e-9, 1e9)) as in the course
LOG_FLOOR_LOG = math.log(LOG_FLOOR)  # the log-mel value of digital silence


def load_wav(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono at `sample_rate` (channels averaged, resampled if needed).

    Raises AudioError with the file name when the file is missing, empty, or not audio.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: not a readable audio file ({_short(exc)})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    check_finite(audio, path)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if sr != sample_rate:
        mono = resample(mono, sr, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_finite(audio: np.ndarray, path) -> None:
    """Float wavs can hold NaN/inf; scoring them would silently report nothing."""
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; not usable audio")


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a 1-D float32 array."""
    if orig_sr == new_sr:
        return audio
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), orig_sr, new_sr)
    return out.numpy()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM mono atomically: a crash never leaves a half-written wav behind."""
    with atomic_write(path) as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def fit_clip(audio: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Trim or zero-pad (at the end, as the course's collate did) to exactly `length` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def mel_power(waveform: torch.Tensor, features) -> torch.Tensor:
    """Mel power spectrogram (B, n_mels, T) of waveforms (B, samples)."""
    return _mel_transform(features, waveform.device)(waveform)


def log_mel(waveform: torch.Tensor, features) -> torch.Tensor:
    """log(clamp(MelSpectrogram(x), 1e-9, 1e9)): the model's input, (B, n_mels, T)."""
    import torch

    return torch.log(mel_power(waveform, features).clamp(LOG_FLOOR, 1e9))


_MEL_CACHE: dict = {}


def _mel_transform(features, device):
    import torchaudio

    key = (
        features.sample_rate,
        features.n_fft,
        features.win_length,
        features.hop_length,
        features.n_mels,
        str(device),
    )
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = torchaudio.transforms.MelSpectrogram(
            sample_rate=features.sample_rate,
            n_fft=features.n_fft,
            win_length=features.win_length,
            hop_length=features.hop_length,
            n_mels=features.n_mels,
        ).to(device)
    return _MEL_CACHE[key]


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
