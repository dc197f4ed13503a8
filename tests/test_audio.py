"""Audio: wav reading (mono, 16 kHz, errors naming the file), writing, clip fitting, and the log-mel
front end against an independent NumPy STFT + mel filterbank."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from kwscli.audio import fit_clip, load_wav, write_wav
from kwscli.config import FeatureConfig
from kwscli.errors import AudioError
from kwscli.models.frontend import log_mel

SR = 16_000


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------- load_wav


def test_stereo_44k_becomes_mono_16k_of_the_same_duration(tmp_path):
    left = sine(440, 1.0, 44_100)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, left], axis=1), 44_100, subtype="FLOAT")
    out = load_wav(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == 16_000
    expected = sine(440, 1.0, SR)
    # away from the resampler's edge effects the 440 Hz tone survives unchanged
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=5e-3)


def test_stereo_channels_are_averaged_not_picked(tmp_path):
    left = sine(300, 0.25, SR)
    path = tmp_path / "anti.wav"
    sf.write(path, np.stack([left, -left], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(load_wav(path), 0.0, atol=1e-7)


def test_int16_pcm_scales_to_unit_range(tmp_path):
    path = tmp_path / "pcm.wav"
    sf.write(
        path, np.array([0, 16384, -32768, 32767, -16384], dtype=np.int16), SR, subtype="PCM_16"
    )
    out = load_wav(path)
    np.testing.assert_array_equal(out, [0.0, 0.5, -1.0, 32767 / 32768, -0.5])


def _zero_frame_wav(path):
    sf.write(path, np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: None, id="missing"),
        pytest.param(lambda p: p.mkdir(), id="directory"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty-file"),
        pytest.param(lambda p: p.write_text("this is not audio\n" * 20), id="text-file"),
        pytest.param(
            lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), id="random-bytes"
        ),
        pytest.param(_zero_frame_wav, id="zero-frames"),
    ],
)
def test_unreadable_inputs_raise_audio_error_naming_the_file(tmp_path, make):
    path = tmp_path / "clip.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        load_wav(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- write_wav and fit_clip


def test_write_wav_round_trips_within_pcm16_resolution(tmp_path):
    audio = sine(1000, 0.1, SR, amp=0.9)
    path = tmp_path / "sub" / "out.wav"
    write_wav(path, audio)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    np.testing.assert_allclose(load_wav(path), audio, atol=1 / 32_767)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]  # no temp files left


def test_write_wav_clips_out_of_range_samples(tmp_path):
    path = tmp_path / "loud.wav"
    write_wav(path, np.array([2.0, -3.0, 0.25], dtype=np.float32))
    out = load_wav(path)
    assert out[0] == pytest.approx(1.0, abs=1 / 32_767)
    assert out[1] == pytest.approx(-1.0, abs=1 / 32_767)
    assert out[2] == pytest.approx(0.25, abs=1 / 32_767)


def test_fit_clip_zero_pads_at_the_end_and_trims():
    audio = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_clip(audio, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(fit_clip(audio, 3), [1, 2, 3])
    np.testing.assert_array_equal(fit_clip(audio, 5), audio)
    assert len(fit_clip(np.zeros(20_000, dtype=np.float32))) == 16_000


# ---------------------------------------------------------------- log-mel


def numpy_log_mel(x: np.ndarray) -> np.ndarray:
    """SPEC §2 front end written out: centred (reflect-padded) 400-point periodic-Hann STFT, hop
    160, power 2, 40 HTK triangular mel bands over 0–8 kHz, then log(clamp(·, 1e-9, 1e9))."""
    n_fft, hop, n_mels = 400, 160, 40
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    n = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(n)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, 201)

    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    f_pts = hz(np.linspace(mel(0.0), mel(SR / 2), n_mels + 2))
    freqs = np.linspace(0, SR / 2, n_fft // 2 + 1)
    up = (freqs[None, :] - f_pts[:-2, None]) / (f_pts[1:-1] - f_pts[:-2])[:, None]
    down = (f_pts[2:, None] - freqs[None, :]) / (f_pts[2:] - f_pts[1:-1])[:, None]
    fbank = np.maximum(0.0, np.minimum(up, down))  # (n_mels, 201)
    return np.log(np.clip(fbank @ power.T, 1e-9, 1e9))  # (n_mels, T)


def test_log_mel_matches_independent_numpy_front_end():
    rng = np.random.default_rng(0)
    x = (0.3 * sine(700, 1.0, SR) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    ours = log_mel(torch.from_numpy(x)[None], FeatureConfig())[0].numpy()
    assert ours.shape == (40, 101)
    np.testing.assert_allclose(ours, numpy_log_mel(x), atol=2e-3)


@pytest.mark.slow
def test_log_mel_matches_torchaudio_course_recipe():
    rng = np.random.default_rng(1)
    x = torch.from_numpy((0.1 * rng.standard_normal((3, SR))).astype(np.float32))
    x[2, 8000:] = 0.0  # silence reaches the 1e-9 floor
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=40
    )
    expected = torch.log(mel(x).clamp(1e-9, 1e9))
    ours = log_mel(x, FeatureConfig())
    assert ours.shape == (3, 40, 101)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert ours[2, :, -1].max().item() == pytest.approx(np.log(1e-9), abs=1e-5)


@pytest.mark.parametrize("samples", [400, 1000, 16_000, 16_159, 16_160, 32_000])
def test_num_frames_agrees_with_log_mel_shape(samples):
    x = torch.zeros(1, samples)
    assert log_mel(x, FeatureConfig()).shape[-1] == FeatureConfig().frames(samples / 16_000)


def test_num_frames_of_one_and_two_seconds():
    assert FeatureConfig().frames(1.0) == 101
    assert FeatureConfig().frames(2.0) == 201


@pytest.mark.slow
def test_resampling_any_rate_needs_bounded_memory():
    """Rates coprime with 16 kHz (44,101 Hz once took 12 GB for 5 s): 30 random rates from 1 kHz to
    192 kHz, 2 s each, resampled in one process whose peak RSS stays under 1 GB, each to within
    1e-4 of the exact length."""
    import subprocess
    import sys

    code = """
import resource, numpy as np
from kwscli.audio import resample, resample_ratio
rng = np.random.default_rng(7)
rates = [44101, 96001, 1001, 191999] + [int(r) for r in rng.integers(1000, 192001, 26)]
for r in rates:
    out = resample(rng.standard_normal(2 * r).astype(np.float32), r, 16000)
    assert abs(len(out) - 32000) <= 32000 * 1e-4 + 1, (r, len(out))
    assert np.isfinite(out).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert int(out.stdout.split()[-1]) < 1024, f"peak RSS {out.stdout.split()[-1]} MB"
