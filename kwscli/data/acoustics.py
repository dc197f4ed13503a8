"""Acoustic variety for synthetic speech: what a TTS voice lacks next to a person in a room.

Each function takes float32 mono at 16 kHz and a numpy generator, and returns a new array:
speed/formant perturbation (a resample played back at 16 kHz), a random smooth EQ with optional
band-limiting (phones, cheap microphones), and room-like reverberation (an exponentially decaying
noise tail). `vary` draws all three for one clip. Pure numpy, so dataset bytes depend only on the
seed.
"""

from __future__ import annotations

import numpy as np

from kwscli.audio import SAMPLE_RATE

SPEED = (0.85, 1.15)  # ±15 %: length, pitch and formants together
EQ_DB = 6.0  # peak gain of the random smooth EQ curve
BAND_LIMIT_P = 0.3
LOWPASS_HZ = (3000.0, 7000.0)
HIGHPASS_HZ = (60.0, 400.0)
REVERB_P = 0.35
RT60_S = (0.15, 0.7)
WET = (0.1, 0.5)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `audio` `factor` times faster (shorter and higher), by linear interpolation."""
    if len(audio) < 2 or factor == 1:
        return audio.astype(np.float32)
    n_out = max(1, int(round(len(audio) / factor)))
    positions = np.arange(n_out) * factor
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def random_eq(audio: np.ndarray, rng: np.random.Generator, band_limit: bool) -> np.ndarray:
    """A smooth random gain curve over log frequency (±EQ_DB), and, if `band_limit`, a high-pass
    and low-pass edge drawn from HIGHPASS_HZ / LOWPASS_HZ (steep cosine roll-offs)."""
    n = len(audio)
    if n < 16:
        return audio.astype(np.float32)
    spec = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    logf = np.log2(np.maximum(freqs, 20.0) / 20.0)  # octaves above 20 Hz, 0 .. ~8.6
    knots = rng.uniform(-EQ_DB, EQ_DB, size=6)
    gain_db = np.interp(logf, np.linspace(0, logf[-1], len(knots)), knots)
    gain = 10 ** (gain_db / 20)
    if band_limit:
        lo, hi = rng.uniform(*HIGHPASS_HZ), rng.uniform(*LOWPASS_HZ)
        gain *= _edge(freqs, lo, rising=True) * _edge(freqs, hi, rising=False)
    return np.fft.irfft(spec * gain, n).astype(np.float32)


def _edge(freqs: np.ndarray, at: float, rising: bool) -> np.ndarray:
    """A half-octave cosine transition centred on `at` Hz: 0 → 1 (rising) or 1 → 0."""
    x = np.clip((np.log2(np.maximum(freqs, 1.0) / at) + 0.25) / 0.5, 0, 1)
    up = 0.5 - 0.5 * np.cos(np.pi * x)
    return up if rising else 1 - up


def reverb(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The dry signal plus a room tail: Gaussian noise decaying by 60 dB over RT60, at a random
    wet share. Same length as the input (the tail past the end is cut)."""
    rt60 = rng.uniform(*RT60_S)
    n_ir = int(rt60 * SAMPLE_RATE)
    t = np.arange(n_ir) / SAMPLE_RATE
    ir = rng.standard_normal(n_ir) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
    ir[: int(0.002 * SAMPLE_RATE)] = 0  # the first reflections arrive after the direct sound
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12
    n = len(audio) + n_ir - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(ir, size), size)[: len(audio)]
    share = rng.uniform(*WET)
    dry_rms = np.sqrt(np.mean(audio**2)) + 1e-12
    wet *= dry_rms / (np.sqrt(np.mean(wet**2)) + 1e-12)
    return ((1 - share) * audio + share * wet).astype(np.float32)


def vary(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speed, EQ (band-limited some of the time) and, some of the time, a room, for one clip."""
    out = change_speed(speech, rng.uniform(*SPEED))
    out = random_eq(out, rng, band_limit=rng.random() < BAND_LIMIT_P)
    if rng.random() < REVERB_P:
        out = reverb(out, rng)
    return out
