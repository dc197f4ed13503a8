"""Audio files: reading any format as float32 mono (soundfile), resampling, atomic wav writes.

torchaudio 2.9+ has no audio I/O of its own, so every read and write goes through soundfile;
torchaudio is used for resampling only. The log-mel front end is kwscli/models/frontend.py.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from kwscli.errors import AudioError
from kwscli.files import atomic_write
from kwscli.shapes import CLIP_SAMPLES, SAMPLE_RATE

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


def audio_files(path: Path, what: str = "audio") -> list[Path]:
    """A file stands for itself; a folder for every regular audio file under it, sorted (pipes,
    devices and sockets are skipped: reading one could wait forever)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file or folder of {what}")
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise AudioError(f"no audio files under {path} (expected .wav, .flac, .ogg, ...)")
    return files


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


RATIO_LIMIT = 1000  # the largest term of a resampling ratio: its filter table is ~ up × down


def resample_ratio(orig_sr: int, new_sr: int) -> tuple[int, int]:
    """(down, up): resampling turns every `down` input samples into `up` output samples. The
    exact ratio where both terms are ≤ RATIO_LIMIT (44.1 kHz → 16 kHz is 441 → 160); else — a
    rate such as 44,101 Hz, coprime with 16 kHz, whose exact filter would need gigabytes — the
    nearest ratio within the limit (a rate error of the order of 1e-5 at most)."""
    g = math.gcd(orig_sr, new_sr)
    down, up = orig_sr // g, new_sr // g
    if max(down, up) <= RATIO_LIMIT:
        return down, up
    ratio = Fraction(new_sr, orig_sr)
    big = max(ratio, 1 / ratio)  # ≥ 1: approximate it with numerator ≤ the limit
    f = big.limit_denominator(max(1, int(RATIO_LIMIT / big)))
    return (f.denominator, f.numerator) if ratio >= 1 else (f.numerator, f.denominator)


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a 1-D float32 array, at the
    ratio of `resample_ratio` (memory bounded whatever the rates)."""
    if orig_sr == new_sr:
        return audio
    try:
        import torch
        import torchaudio.functional as AF
    except ImportError:
        raise AudioError(
            f"audio at {orig_sr} Hz needs resampling to {new_sr} Hz, which needs torch "
            f"(pip install torch torchaudio); or convert it to {new_sr} Hz first"
        ) from None

    down, up = resample_ratio(orig_sr, new_sr)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(audio)), down, up)
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


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
