"""One front end: the offline model, `kws detect`'s streaming detector and the TorchScript export
compute the same log-mels and the same P(keyword) on the example recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kwscli.audio import load_wav
from kwscli.bundled import bundled_model
from kwscli.checkpoint import load_checkpoint
from kwscli.config import FeatureConfig
from kwscli.inference import build_model
from kwscli.models.crnn import keyword_probability
from kwscli.models.frontend import LOG_FLOOR_LOG, LogMel, mel_filterbank
from kwscli.models.streaming import StreamingDetector
from kwscli.shapes import conv_span

EXAMPLE = Path(__file__).parents[1] / "examples" / "sheila_example.wav"


def test_the_runtimes_numpy_front_end_equals_logmel():
    """The torch-free runtime's log-mel (numpy FFT, from LogMel's own window and filterbank)
    equals LogMel's to float rounding."""
    from kwscli.runtime import numpy_log_mel

    f = FeatureConfig()
    logmel = LogMel(f)
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    n = logmel.frames(len(x))
    ours = numpy_log_mel(x, n, f.hop_length, logmel.window.numpy(), logmel.fb.numpy())
    np.testing.assert_allclose(ours, logmel(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-5)
    silent = numpy_log_mel(np.zeros(4000, np.float32), 3, f.hop_length,
                           logmel.window.numpy(), logmel.fb.numpy())  # fmt: skip
    np.testing.assert_allclose(silent, LOG_FLOOR_LOG, rtol=1e-6)  # digital silence: the floor


def test_a_frame_is_the_power_spectrum_of_its_own_samples():
    """Frame k reads samples [k*hop, k*hop + n_fft): a numpy FFT of that slice, mel-weighted."""
    f = FeatureConfig()
    logmel = LogMel(f)
    x = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    k = 7
    piece = x[k * f.hop_length : k * f.hop_length + f.n_fft].astype(np.float64)
    window = logmel.window.double().numpy()
    power = np.abs(np.fft.rfft(piece * window)) ** 2
    expected = np.log(np.clip(power @ logmel.fb.double().numpy(), 1e-9, 1e9))
    ours = logmel(torch.from_numpy(x))[:, k].double().numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "sample_rate"), [(400, 40, 16000), (512, 64, 16000), (256, 23, 8000)]
)
def test_the_mel_filterbank_equals_torchaudios(n_fft, n_mels, sample_rate):
    """Ours (so that detection need not import torchaudio) is torchaudio's melscale_fbanks with
    the defaults MelSpectrogram uses: HTK scale, no norm, 0 Hz to Nyquist."""
    import torchaudio

    theirs = torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, 0.0, float(sample_rate // 2), n_mels, sample_rate
    )
    ours = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate)
    assert ours.shape == theirs.shape == (n_fft // 2 + 1, n_mels)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
    assert (ours.max(dim=0).values > 0).all()  # every filter catches some bin


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/sheila_example.wav not in this tree")
def test_detect_torchscript_and_offline_model_agree_on_the_example_recording():
    from kwscli.export import StreamingKWS

    ckpt = load_checkpoint(bundled_model("student"))
    model = build_model(ckpt).float().eval()
    f = ckpt.features
    audio = load_wav(EXAMPLE, f.sample_rate)

    det = StreamingDetector(model, f, state="window")
    streamed = det.process(audio).probs

    scripted = torch.jit.script(StreamingKWS(ckpt))
    chunks = [scripted(torch.from_numpy(c)) for c in np.array_split(audio, 37)]
    exported = torch.cat(chunks).double().numpy()

    # offline: the whole file's frames after the silence prefix, every window through the model
    g = det.geometry
    frames = torch.cat(
        [
            torch.full((f.n_mels, g.prefix_frames), LOG_FLOOR_LOG),
            LogMel(f)(torch.from_numpy(audio)),
        ],
        dim=1,
    )
    starts = range(0, frames.shape[1] - g.window_frames + 1, g.stride)
    windows = torch.stack([frames[:, s : s + g.window_frames] for s in starts])
    assert windows.shape[-1] == conv_span(g.window, g.kernel, g.stride)
    with torch.no_grad():
        offline = keyword_probability(model(windows)).double().numpy()

    assert len(streamed) == len(exported) == len(offline) > 100
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    np.testing.assert_allclose(exported, offline, atol=1e-5)
    assert offline.max() > 0.9  # the example holds the keyword: the comparison is not of zeros
