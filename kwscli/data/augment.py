"""Training augmentation of SPEC §2, applied to cached log-mels instead of waveforms.

Per clip, one of four (equal odds): identity; Gaussian noise (std 0.01); gain 0.25; a random crop
of `_background_noise_` at 1 dB SNR. Then SpecAugment: FrequencyMasking(15), TimeMasking(35).

Why in the feature domain: recomputing log-mels from waveforms each batch costs more than the
model itself on a CPU. Mixing is done in mel *power*, where independent signals add:
P(x + n) ≈ P(x) + P(n). The cross term 2·Re(X·N̄) has zero mean and is dropped, which is the one
approximation here; gain is exact (P(g·x) = g²·P(x)). SNR uses each clip's waveform power, so
"1 dB" means the same as in the waveform recipe.
"""

from __future__ import annotations

import torch

from kwscli.models.frontend import LOG_FLOOR_LOG, mel_power, to_log

GAUSSIAN_STD = 0.01
GAIN = 0.25
NOISE_SNR_DB = 1.0
FREQ_MASK = 15
TIME_MASK = 35


class FeatureAugmenter:
    """Augments a batch of log-mels; every random draw comes from the generator it is given."""

    def __init__(
        self,
        noise_power: torch.Tensor | None,
        noise_energy: torch.Tensor | None,
        white_power: torch.Tensor,
    ) -> None:
        self.noise_power = noise_power  # (K, F, T) mel power of background crops
        self.noise_energy = noise_energy  # (K,)
        self.white_power = white_power  # (W, F, T) mel power of unit-variance white noise

    def __call__(
        self, logmel: torch.Tensor, energy: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        b = logmel.shape[0]
        power = to_power(logmel)  # (B, F, T)
        choice = torch.randint(0, 4, (b,), generator=gen)
        if self.noise_power is None:
            choice[choice == 3] = 0  # no background noise in this dataset
        scale = torch.ones(b)
        scale[choice == 2] = GAIN**2
        power = power * scale[:, None, None]

        white = choice == 1
        if white.any():
            pick = torch.randint(0, len(self.white_power), (int(white.sum()),), generator=gen)
            power[white] += GAUSSIAN_STD**2 * self.white_power[pick]
        bg = choice == 3
        if bg.any():
            pick = torch.randint(0, len(self.noise_power), (int(bg.sum()),), generator=gen)
            # g² so that power(x) / (g²·power(n)) = 10^(snr/10); a silent crop (a cache made
            # before silent crops were skipped) adds nothing instead of dividing by zero
            noise_e = self.noise_energy[pick]
            g2 = torch.where(
                noise_e > 0, energy[bg] / (noise_e.clamp_min(1e-30) * 10 ** (NOISE_SNR_DB / 10)), 0
            )
            power[bg] += g2[:, None, None] * self.noise_power[pick]
        return spec_augment(to_log(power), gen, FREQ_MASK, TIME_MASK, fill=LOG_FLOOR_LOG)


def to_power(logmel: torch.Tensor) -> torch.Tensor:
    """Mel power of cached log-mels; bins at the log floor (silence, masks) become exactly 0."""
    return torch.where(logmel <= LOG_FLOOR_LOG, torch.zeros_like(logmel), logmel.exp())


def spec_augment(
    x: torch.Tensor, gen: torch.Generator, freq_param: int, time_param: int, fill: float
) -> torch.Tensor:
    """One frequency and one time mask per clip, widths uniform in [0, param) (torchaudio's iid
    masking). `fill` is log(1e-9): masking the power spectrogram with 0 before the log, as the
    course did, gives exactly this value."""
    b, f, t = x.shape
    out = x.clone()
    for axis, size, param in ((1, f, freq_param), (2, t, time_param)):
        width = (torch.rand(b, generator=gen) * min(param, size)).long()  # (B,)
        start = (torch.rand(b, generator=gen) * (size - width)).long()  # (B,)
        pos = torch.arange(size)
        mask = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + width)[:, None])
        out = out.masked_fill(mask[:, :, None] if axis == 1 else mask[:, None, :], fill)
    return out


def white_noise_bank(features, count: int = 64, seed: int = 1234) -> torch.Tensor:
    """Mel power of `count` unit-variance white-noise clips (scaled by std² when mixed)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, features.clip_samples, generator=gen)
    with torch.no_grad():
        return mel_power(noise, features)


class Mixup:
    """Replaces a share of each batch by mixtures of two of its clips (function matching,
    Beyer et al. 2022): the teacher labels whatever it hears, so the student learns the
    teacher's function between the training clips too, not only on them.

    Clip i becomes λ·P(x_i) + (1−λ)·P(x_j) in mel power (two sounds heard at once, as the
    noise mixing above), j = π(i) for a random permutation π of the batch (j = i, about 1 time
    in B, leaves the clip as it was) and λ uniform in [0, 1). Runs
    after `inner` (the usual augmentation), so both clips of a mixture arrive augmented. Only for
    distillation: the mixture's hard label is undefined.
    """

    def __init__(self, share: float, inner: FeatureAugmenter | None = None) -> None:
        self.share = share
        self.inner = inner

    def __call__(
        self, logmel: torch.Tensor, energy: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        x = logmel if self.inner is None else self.inner(logmel, energy, gen)
        b = x.shape[0]
        mixed = torch.rand(b, generator=gen) < self.share
        partner = torch.randperm(b, generator=gen)
        lam = torch.rand(b, generator=gen)[:, None, None]
        if not mixed.any():
            return x
        power = to_power(x)
        out = to_log(lam * power + (1 - lam) * power[partner])
        return torch.where(mixed[:, None, None], out, x)
