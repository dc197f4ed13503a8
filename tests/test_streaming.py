"""StreamingDetector: any chunking gives the offline model's outputs on the same windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kwscli.config import FeatureConfig, ModelConfig
from kwscli.models.crnn import CRNN
from kwscli.models.frontend import LogMel
from kwscli.models.streaming import StreamingDetector

FEATURES = FeatureConfig()
SHAPES = [
    ModelConfig(hidden_size=16),
    ModelConfig(cnn_out_channels=3, kernel_size=(7, 20), stride=(7, 12), hidden_size=8),
    ModelConfig(
        cnn_out_channels=2, kernel_size=(5, 9), stride=(3, 4), hidden_size=6, gru_num_layers=1
    ),
]


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.1 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 440 * t * (1 + t))).astype(
        np.float32
    )


def _stream(detector, audio, chunks):
    detector.reset()
    outs, pos = [], 0
    for size in chunks:
        outs.append(detector.process(audio[pos : pos + size]))
        pos += size
    outs.append(detector.process(audio[pos:]))
    return (np.concatenate([o.times for o in outs]), np.concatenate([o.probs for o in outs]))


def _offline_frames(detector, audio) -> torch.Tensor:
    """Silence prefix + every frame of the audio, computed in one go."""
    frames = LogMel(FEATURES)(torch.from_numpy(audio))
    prefix = torch.full(
        (FEATURES.n_mels, detector.window_frames - detector.stride_t), float(np.log(1e-9))
    )
    return torch.cat([prefix, frames], dim=1)


@pytest.mark.parametrize("config", SHAPES)
@pytest.mark.slow
def test_window_mode_equals_the_offline_model_on_each_window(config):
    torch.manual_seed(0)
    model = CRNN(config, 40).eval()
    det = StreamingDetector(model, FEATURES, state="window")
    audio = _audio(2.7)
    frames = _offline_frames(det, audio)
    expected = []
    last = (frames.shape[1] - det.geometry.kernel) // det.stride_t
    for j in range(det.window - 1, last + 1):
        start = (j - det.window + 1) * det.stride_t
        window = frames[:, start : start + det.window_frames]
        with torch.no_grad():
            expected.append(torch.softmax(model(window[None]), -1)[0, 1].item())
    for chunks in ([len(audio)], [1234] * 30, [160] * 270, [1, 7, 399, 4000, 33]):
        _, probs = _stream(det, audio, chunks)
        np.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("config", SHAPES[:2])
def test_carry_mode_equals_one_offline_gru_pass_pooled_per_window(config):
    torch.manual_seed(1)
    model = CRNN(config, 40).eval()
    det = StreamingDetector(model, FEATURES, state="carry")
    audio = _audio(3.1, seed=2)
    frames = _offline_frames(det, audio)
    with torch.no_grad():
        h, _ = model.gru(model.encode(frames[None]))  # the GRU over the whole stream, once
        h = h[0]
        energy = model.attention.energy(h).squeeze(-1)
        expected = []
        for j in range(det.window - 1, len(h)):
            w = torch.softmax(energy[j - det.window + 1 : j + 1], dim=0)
            pooled = (w[:, None] * h[j - det.window + 1 : j + 1]).sum(0)
            expected.append(torch.softmax(model.classifier(pooled), -1)[1].item())
    for chunks in ([len(audio)], [500] * 99, [16000, 3, 3, 3]):
        _, probs = _stream(det, audio, chunks)
        np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_times_step_by_the_conv_stride_and_reset_restarts():
    model = CRNN(ModelConfig(hidden_size=8), 40).eval()
    det = StreamingDetector(model, FEATURES)
    audio = _audio(2.0)
    times, probs = _stream(det, audio, [3000] * 5)
    assert np.allclose(np.diff(times), 8 * 160 / 16000)  # stride 8 frames of 10 ms
    assert times[-1] <= 2.0 + 1e-9
    again_t, again_p = _stream(det, audio, [len(audio)])
    np.testing.assert_array_equal(times, again_t)
    np.testing.assert_allclose(probs, again_p, atol=1e-6)


def test_step_thins_the_outputs():
    model = CRNN(ModelConfig(hidden_size=8), 40).eval()
    audio = _audio(2.0)
    every = _stream(StreamingDetector(model, FEATURES, step=1), audio, [len(audio)])
    third = _stream(StreamingDetector(model, FEATURES, step=3), audio, [len(audio)])
    np.testing.assert_array_equal(third[0], every[0][::3])
    np.testing.assert_allclose(third[1], every[1][::3], atol=1e-6)


def test_memory_stays_bounded_on_a_long_stream():
    model = CRNN(ModelConfig(hidden_size=8), 40).eval()
    det = StreamingDetector(model, FEATURES, state="carry")
    chunk = _audio(1.0)
    for _ in range(60):
        det.process(chunk)
    assert det.conv_frames.frames.shape[1] < det.geometry.kernel + det.stride_t
    assert len(det.history) < det.window and len(det.gru_out) < det.window


def test_where_a_window_looked_is_as_exact_a_day_into_a_stream():
    """The focus time (attention-weighted centre) a day into a stream equals the focus at its
    start plus a day: the soak found fp16 attention weights times centres of ~86,400 s drifting
    detections by up to a second."""
    from kwscli.bundled import bundled_model
    from kwscli.checkpoint import load_checkpoint
    from kwscli.inference import build_model

    ckpt = load_checkpoint(bundled_model("student"))  # fp16: the worst case
    audio = _audio(3.0)
    focus = []
    for offset in (0, 24 * 3600 * 20):  # conv steps of a day at 50 ms
        det = StreamingDetector(build_model(ckpt), ckpt.features)
        det.conv_steps += offset
        out = det.process(audio)
        focus.append(out.focus - offset * det.geometry.step_seconds)
    assert len(focus[0]) > 10
    np.testing.assert_allclose(focus[1], focus[0], atol=1e-6)
