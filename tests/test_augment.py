"""Feature-domain augmentation: each branch against a waveform-domain computation done here
(gain exact, Gaussian noise at std 0.01, background noise at 1 dB SNR), SpecAugment masks, and
determinism from the generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

import kwscli.data.augment as augment_mod
from kwscli.config import FeatureConfig
from kwscli.data.augment import FeatureAugmenter, spec_augment, white_noise_bank

SR = 16_000
FLOOR = math.log(1e-9)
_MEL = torchaudio.transforms.MelSpectrogram(
    sample_rate=16000, n_fft=400, win_length=400, hop_length=160, n_mels=40
)


def mel_power(wave: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _MEL(wave)


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    return torch.log(mel_power(wave).clamp(1e-9, 1e9))


def rng_wave(seed: int, std: float, n: int = 1) -> torch.Tensor:
    return std * torch.randn(n, SR, generator=torch.Generator().manual_seed(seed))


def tone() -> torch.Tensor:
    t = torch.arange(SR) / SR
    return (0.4 * torch.sin(2 * math.pi * 600 * t) + 0.01 * rng_wave(5, 1.0)[0])[None]


@pytest.fixture
def no_spec_augment(monkeypatch):
    monkeypatch.setattr(augment_mod, "spec_augment", lambda x, *args, **kwargs: x)


def test_gain_and_gaussian_branches_match_the_waveform_recipe(no_spec_augment):
    """Each row comes out as the clip itself, the log-mel of 0.25·clip, or the clip plus std-0.01
    white noise (power added exactly: log(P + 0.01²·W_k) for one noise k of the bank)."""
    wave = tone()
    clean = log_mel(wave)[0]
    gained = log_mel(0.25 * wave)[0]
    white = mel_power(rng_wave(9, 1.0, n=3))  # (3, F, T) unit-variance white noise
    aug = FeatureAugmenter(None, None, white)
    batch = clean.expand(40, -1, -1).clone()
    energy = wave.pow(2).mean().expand(40).clone()
    out = aug(batch, energy, torch.Generator().manual_seed(0))

    kinds = []
    for row in out:
        if torch.allclose(row, clean, atol=1e-5, rtol=0):
            kinds.append("identity")
        elif torch.allclose(row, gained, atol=1e-4, rtol=0):
            kinds.append("gain")
        else:
            noisy = [torch.log(clean.exp() + 1e-4 * w) for w in white]
            assert any(torch.allclose(row, n, atol=1e-4, rtol=0) for n in noisy)
            kinds.append("gaussian")
    assert set(kinds) == {"identity", "gain", "gaussian"}  # no background noise available


def _snr_db(clean_power: torch.Tensor, out_logmel: torch.Tensor) -> float:
    added = out_logmel.exp() - clean_power
    return 10 * math.log10(clean_power.sum().item() / added.sum().item())


def test_background_noise_is_mixed_at_one_db_snr(no_spec_augment):
    """With white noise as both clip and background (same spectrum), the ratio of clip power to
    added noise power in the mel domain equals the waveform SNR: 1 dB. The Gaussian branch shows
    up at 10·log10(0.3² / 0.01²) ≈ 29.5 dB."""
    clip = rng_wave(1, 0.3)
    clean_power = mel_power(clip)[0]
    noise_waves = rng_wave(2, 0.1, n=4)
    aug = FeatureAugmenter(
        mel_power(noise_waves), noise_waves.pow(2).mean(dim=1), mel_power(rng_wave(3, 1.0, n=2))
    )
    batch = torch.log(clean_power.clamp(1e-9, 1e9)).expand(48, -1, -1).clone()
    energy = clip.pow(2).mean().expand(48).clone()
    out = aug(batch, energy, torch.Generator().manual_seed(0))
    snrs = [_snr_db(clean_power, row) for row in out if (row.exp() - clean_power).sum() > 1e-3]
    background = [s for s in snrs if s < 10]
    gaussian = [s for s in snrs if s >= 10]
    assert background and gaussian
    assert all(abs(s - 1.0) < 0.15 for s in background), background
    expected_gaussian = 10 * math.log10(0.3**2 / 0.01**2)
    assert all(abs(s - expected_gaussian) < 0.3 for s in gaussian), gaussian


def _mask_bands(row: torch.Tensor, fill: float) -> tuple[int, int]:
    """Widths of the fully filled frequency rows and time columns; checks they are contiguous and
    that they explain every filled cell."""
    filled = row == fill
    freq = torch.nonzero(filled.all(dim=1)).flatten()
    time = torch.nonzero(filled.all(dim=0)).flatten()
    for band in (freq, time):
        if len(band):
            assert band[-1] - band[0] + 1 == len(band)  # one contiguous mask
    explained = torch.zeros_like(filled)
    explained[freq, :] = True
    explained[:, time] = True
    assert torch.equal(filled, explained)
    return len(freq), len(time)


def test_spec_augment_masks_are_narrower_than_their_parameter():
    x = torch.zeros(300, 40, 101)
    out = spec_augment(x, torch.Generator().manual_seed(0), 15, 35, fill=-7.0)
    widths = np.array([_mask_bands(row, -7.0) for row in out])
    assert widths[:, 0].max() < 15 and widths[:, 1].max() < 35
    assert widths[:, 0].max() >= 12 and widths[:, 1].max() >= 30  # the whole range is used
    assert widths[:, 0].min() == 0 and widths[:, 1].min() <= 2
    assert torch.equal(x, torch.zeros(300, 40, 101))  # input untouched


def test_augmenter_masks_with_the_log_floor():
    """Masking power with 0 before log(clamp(·, 1e-9)) gives log(1e-9) ≈ −20.723."""
    white = torch.ones(1, 40, 101)
    aug = FeatureAugmenter(None, None, white)
    out = aug(torch.zeros(64, 40, 101), torch.ones(64), torch.Generator().manual_seed(3))
    assert pytest.approx(-20.7232658369, abs=1e-9) == FLOOR
    filled = out == torch.tensor(FLOOR, dtype=out.dtype)
    assert filled.any()
    widths = np.array(
        [_mask_bands(row, torch.tensor(FLOOR, dtype=out.dtype).item()) for row in out]
    )
    assert widths[:, 0].max() < 15 and widths[:, 1].max() < 35


def _augmenter() -> FeatureAugmenter:
    noise = rng_wave(2, 0.1, n=3)
    return FeatureAugmenter(
        mel_power(noise), noise.pow(2).mean(dim=1), white_noise_bank(FeatureConfig(), count=2)
    )


def test_same_seed_same_augmentation_different_seed_differs():
    aug = _augmenter()
    batch = log_mel(rng_wave(4, 0.2, n=8))
    energy = torch.full((8,), 0.04)
    a = aug(batch, energy, torch.Generator().manual_seed(11))
    b = aug(batch, energy, torch.Generator().manual_seed(11))
    c = aug(batch, energy, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == batch.shape and torch.isfinite(a).all()


def test_white_noise_bank_is_unit_variance_white_noise():
    bank = white_noise_bank(FeatureConfig(), count=2)
    assert bank.shape == (2, 40, 101)
    reference = mel_power(rng_wave(0, 1.0, n=1))[0]
    # same statistics as any unit-variance white noise: total mel power within a few percent
    assert bank.sum(dim=(1, 2)) / reference.sum() == pytest.approx(torch.ones(2), rel=0.05)
