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
from kwscli.data.augment import FeatureAugmenter, Mixup, spec_augment, white_noise_bank

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


# ---------------------------------------------------------------- mixup (distillation only)


def _clips(n: int, seed: int = 21) -> torch.Tensor:
    """n log-mels of noise at different levels, so every clip differs from every other."""
    levels = torch.logspace(-3, -1, n)[:, None]
    return log_mel(levels * rng_wave(seed, 1.0, n=n))


def test_mixup_is_a_convex_mixture_in_power_of_two_batch_clips():
    x = _clips(6)
    out = Mixup(1.0)(x, torch.ones(6), torch.Generator().manual_seed(3))
    p, q = x.exp(), out.exp()
    for i in range(6):
        # which clip j and weight λ explain out_i = λ·P_i + (1−λ)·P_j: least squares per j
        fits = []
        for j in range(6):
            a = torch.stack([p[i].ravel(), p[j].ravel()], dim=1).double()
            coef = torch.linalg.lstsq(a, q[i].ravel().double()[:, None]).solution.ravel()
            resid = (a @ coef - q[i].ravel().double()).abs().max() / q[i].max()
            fits.append((float(resid), j, coef))
        resid, j, coef = min(fits, key=lambda f: f[0])
        assert resid < 1e-4
        if j != i:  # a real mixture: weights in [0, 1] that sum to 1
            assert coef.sum().item() == pytest.approx(1.0, abs=1e-4)
            assert (coef >= -1e-6).all() and (coef <= 1 + 1e-6).all()


def test_mixup_against_mixing_the_waveforms():
    """Two independent sounds mixed as √λ·a + √(1−λ)·b in the waveform: log-mel within the
    cross term of Mixup's λ·P(a) + (1−λ)·P(b) on the bins that carry the energy."""
    a, b = rng_wave(30, 0.1), tone()
    x = torch.cat([log_mel(a), log_mel(b)])
    out = Mixup(1.0)(x, torch.ones(2), torch.Generator().manual_seed(0))
    # recover λ for clip 0 from its power (partner is clip 1 or itself)
    pa, pb, q = x[0].exp(), x[1].exp(), out[0].exp()
    if torch.allclose(q, pa, rtol=1e-5):
        pytest.skip("this seed pairs clip 0 with itself")
    lam = float(((q - pb) * (pa - pb)).sum() / ((pa - pb) ** 2).sum())
    assert 0.0 <= lam <= 1.0
    wave = math.sqrt(lam) * a + math.sqrt(1 - lam) * b
    ref = log_mel(wave)[0]
    loud = ref > ref.max() - 6
    assert (out[0][loud] - ref[loud]).abs().median() < 0.1


@pytest.mark.slow
def test_mixup_share_sets_how_many_clips_change_and_zero_changes_none():
    x = _clips(400)
    gen = torch.Generator().manual_seed(5)
    changed = (Mixup(0.5)(x, torch.ones(400), gen) != x).flatten(1).any(dim=1).sum().item()
    assert 160 <= changed <= 240  # binomial(400, 0.5): ±4 standard deviations
    assert torch.equal(Mixup(0.0)(x, torch.ones(400), gen), x)


def test_mixup_runs_after_the_usual_augmentation_and_is_seeded():
    aug = _augmenter()
    x = log_mel(rng_wave(4, 0.2, n=8))
    energy = torch.full((8,), 0.04)
    mixed = Mixup(1.0, aug)
    a = mixed(x, energy, torch.Generator().manual_seed(11))
    b = mixed(x, energy, torch.Generator().manual_seed(11))
    plain = aug(x, energy, torch.Generator().manual_seed(11))
    assert torch.equal(a, b) and not torch.equal(a, plain)
    assert torch.isfinite(a).all() and a.min() >= FLOOR - 1e-4


def test_silent_noise_crops_are_skipped_and_never_divide_by_zero(tmp_path):
    """A background file of 1 s noise + 9 s digital silence: crops come from the noise only, and
    an all-zero crop (an older cache) mixes in nothing instead of inf/NaN."""
    import soundfile as sf

    from kwscli.data.features import noise_bank

    rng = np.random.default_rng(0)
    folder = tmp_path / "_background_noise_"
    folder.mkdir()
    audio = np.zeros(160_000, np.float32)
    audio[:16_000] = 0.1 * rng.standard_normal(16_000)
    sf.write(folder / "mostly_silent.wav", audio, 16_000, subtype="PCM_16")
    power, energy = noise_bank([folder / "mostly_silent.wav"], FeatureConfig(), crops=8)
    assert power is not None and len(energy) >= 1 and bool((energy > 1e-6).all())

    silent = FeatureAugmenter(
        torch.zeros(2, 40, 101), torch.zeros(2), white_noise_bank(FeatureConfig())
    )
    batch = log_mel(rng_wave(4, 0.2, n=16))
    out = silent(batch, batch.exp().mean(dim=(1, 2)), torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
