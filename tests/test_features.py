"""Feature cache: log-mels equal an independent computation, are cached under KWS_CACHE_DIR and
reused, rebuilt when a file changes; unreadable clips are skipped, not fatal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import kwscli.data.features as features_mod
from kwscli.config import FeatureConfig
from kwscli.data.features import load_features, noise_bank
from kwscli.data.speech_commands import scan_dataset
from kwscli.errors import DataError
from tests.conftest import make_dataset

FEAT = FeatureConfig()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("KWS_CACHE_DIR", str(d))
    return d


@pytest.fixture
def small_ds(tmp_path) -> Path:
    """Six clips, no background noise (a 512-crop noise bank would dominate the run time)."""
    return make_dataset(tmp_path / "ds", {"sheila": 3, "yes": 3}, noise=False)


@pytest.fixture
def noisy_ds(tmp_path) -> Path:
    return make_dataset(tmp_path / "noisy", {"sheila": 2, "yes": 2})


def reference_log_mel(path: Path) -> torch.Tensor:
    """Read with soundfile, zero-pad/trim to 1 s, torchaudio MelSpectrogram, log(clamp)."""
    audio, sr = sf.read(path, dtype="float32")
    assert sr == 16_000
    clip = np.zeros(16_000, dtype=np.float32)
    clip[: min(len(audio), 16_000)] = audio[:16_000]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=40
    )
    return torch.log(mel(torch.from_numpy(clip)).clamp(1e-9, 1e9))


def test_features_equal_an_independent_log_mel(small_ds, cache_dir):
    index = scan_dataset(small_ds, "sheila")
    fs = load_features(index, FEAT)
    assert fs.features.shape == (6, 40, 101) and fs.features.dtype == torch.float32
    assert fs.paths == index.paths and fs.skipped == []
    assert fs.labels.tolist() == index.labels.tolist()
    for i, rel in enumerate(fs.paths):
        torch.testing.assert_close(
            fs.features[i], reference_log_mel(small_ds / rel), rtol=1e-5, atol=1e-4
        )
        audio, _ = sf.read(small_ds / rel, dtype="float32")
        assert fs.energy[i].item() == pytest.approx(np.sum(audio[:16000] ** 2) / 16_000, rel=1e-4)


@pytest.mark.slow
def test_cache_is_written_under_kws_cache_dir_and_reused(noisy_ds, cache_dir, monkeypatch):
    index = scan_dataset(noisy_ds, "sheila")
    first = load_features(index, FEAT)
    assert first.cache_file is not None and first.cache_file.parent == cache_dir
    assert [p.name for p in cache_dir.iterdir()] == [first.cache_file.name]
    mtime = first.cache_file.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("features recomputed although the cache is valid")

    monkeypatch.setattr(features_mod, "compute_features", fail)
    second = load_features(scan_dataset(noisy_ds, "sheila"), FEAT)
    assert second.cache_file == first.cache_file
    assert first.cache_file.stat().st_mtime_ns == mtime
    torch.testing.assert_close(second.features, first.features, rtol=0, atol=0)
    assert second.paths == first.paths and second.labels.tolist() == first.labels.tolist()
    torch.testing.assert_close(second.noise_power, first.noise_power, rtol=0, atol=0)


def test_changing_a_clip_rebuilds_the_cache(small_ds, cache_dir):
    index = scan_dataset(small_ds, "sheila")
    first = load_features(index, FEAT)
    rel = index.paths[0]
    st = (small_ds / rel).stat()
    sf.write(small_ds / rel, np.full(8000, 0.5, dtype=np.float32), 16_000, subtype="PCM_16")
    os.utime(small_ds / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = load_features(scan_dataset(small_ds, "sheila"), FEAT)
    assert second.cache_file != first.cache_file
    assert not torch.equal(second.features[0], first.features[0])
    torch.testing.assert_close(
        second.features[0], reference_log_mel(small_ds / rel), rtol=1e-5, atol=1e-4
    )
    torch.testing.assert_close(second.features[1:], first.features[1:], rtol=0, atol=0)


def test_damaged_cache_file_is_rebuilt(small_ds, cache_dir):
    index = scan_dataset(small_ds, "sheila")
    first = load_features(index, FEAT)
    first.cache_file.write_bytes(b"garbage")
    again = load_features(index, FEAT)
    torch.testing.assert_close(again.features, first.features, rtol=0, atol=0)


def test_unreadable_clips_are_skipped_and_listed(small_ds, cache_dir):
    (small_ds / "yes" / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (small_ds / "yes" / "empty.wav").write_bytes(b"")
    index = scan_dataset(small_ds, "sheila")
    assert len(index.paths) == 8
    fs = load_features(index, FEAT)
    assert fs.features.shape[0] == 6 and len(fs.labels) == 6
    assert "yes/corrupt.wav" not in fs.paths and "yes/empty.wav" not in fs.paths
    assert len(fs.skipped) == 2
    assert any("corrupt.wav" in s for s in fs.skipped)
    assert any("empty.wav" in s for s in fs.skipped)
    assert fs.subset(index.paths).tolist() == list(range(6))
    cached = load_features(index, FEAT)  # the cache remembers what was skipped
    assert cached.skipped == fs.skipped


def test_all_unreadable_is_a_data_error(tmp_path, cache_dir):
    (tmp_path / "ds" / "sheila").mkdir(parents=True)
    (tmp_path / "ds" / "sheila" / "a.wav").write_bytes(b"")
    (tmp_path / "ds" / "sheila" / "b.wav").write_text("not audio")
    with pytest.raises(DataError, match="none of the 2 wav files"):
        load_features(scan_dataset(tmp_path / "ds", "sheila", split="random"), FEAT)


def test_noise_bank_shapes_and_energy(noisy_ds):
    files = sorted((noisy_ds / "_background_noise_").glob("*.wav"))
    power, energy = noise_bank(files, FEAT, crops=7)
    assert power.shape == (7, 40, 101) and energy.shape == (7,)
    audio, _ = sf.read(files[0], dtype="float32")
    # every crop is a 1-s slice of the 0.1-std noise file
    assert torch.all((energy > 0.5 * 0.01) & (energy < 2 * 0.01))
    assert energy.max().item() <= np.max(audio**2)
    assert torch.all(power >= 0)


@pytest.mark.slow
def test_noise_bank_of_features_and_none_without_noise(noisy_ds, small_ds, tmp_path, cache_dir):
    fs = load_features(scan_dataset(noisy_ds, "sheila"), FEAT)
    assert fs.noise_power.shape == (512, 40, 101) and fs.noise_energy.shape == (512,)
    assert load_features(scan_dataset(small_ds, "sheila"), FEAT).noise_power is None
    assert noise_bank([], FEAT) == (None, None)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(800, 0.1, dtype=np.float32), 16_000)
    assert noise_bank([short], FEAT) == (None, None)  # shorter than a clip: unusable
