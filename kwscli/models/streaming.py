"""Run a CRNN over an endless audio stream (SPEC §4), chunk by chunk, in bounded memory.

Audio of any chunk size goes in; one P(keyword) comes out per conv time step (every `stride_t`
frames: 80 ms for the teacher). Each conv step is computed once: a frame buffer keeps only the
frames the next conv step still needs (the receptive field), so chunk boundaries never change the
result. The stream starts as if preceded by a window of digital silence (the log floor, as in the
zero padding of training clips), so the first word of a file is scored with a full window, and
`flush()` ends it with half a window of silence, so the last word is too.

Two ways to run the GRU, both giving exactly what the offline model gives on the same frames:
- state="window" (default): every output is the model applied to the last `window` frames, GRU
  started from zero, as in training. Equals `model(frames[t-window:t])` to float precision.
- state="carry": the GRU hidden state is carried across the whole stream (the course's streaming
  recipe): each GRU step runs once; attention pools the last `window` outputs. Equals running the
  GRU over the whole stream offline and pooling the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kwscli.audio import LOG_FLOOR_LOG
from kwscli.config import FeatureConfig
from kwscli.models.crnn import input_dtype


@dataclass
class StreamOutput:
    """P(keyword) per step, with the time (s, stream clock) at the end of each step's window."""

    times: np.ndarray  # (n,)
    probs: np.ndarray  # (n,)
    focus: np.ndarray  # (n,) attention-weighted centre time (s) of each window: where it looked


def frames_log_mel(
    samples: torch.Tensor, window: torch.Tensor, fb: torch.Tensor, n_fft: int, hop: int
) -> torch.Tensor:
    """(n_mels, n) log-mel of every whole n_fft window of `samples`, hop apart, no padding.

    The same numbers as torchaudio's MelSpectrogram(center=False) then log(clamp(x, 1e-9, 1e9)),
    faster (power as re^2 + im^2, no square root), and TorchScript-able for `kws export`.
    """
    spec = torch.stft(samples, n_fft, hop, n_fft, window, center=False, return_complex=True)
    power = spec.real.pow(2) + spec.imag.pow(2)  # (freqs, n)
    mel = torch.matmul(fb.transpose(0, 1), power)  # (n_mels, n)
    return torch.log(mel.clamp(1e-9, 1e9))


def mel_constants(features: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The STFT window (win_length Hann centred in n_fft, as torch.stft pads it) and the mel
    filterbank (freqs, n_mels) that MelSpectrogram uses."""
    import torchaudio

    f = features
    pad = (f.n_fft - f.win_length) // 2
    window = nn.functional.pad(torch.hann_window(f.win_length), (pad, f.n_fft - f.win_length - pad))
    fb = torchaudio.functional.melscale_fbanks(
        f.n_fft // 2 + 1, 0.0, f.sample_rate / 2, f.n_mels, f.sample_rate
    )
    return window, fb


class LogMelStream:
    """Log-mel frames of a stream: frame k covers samples [k*hop, k*hop + n_fft) (no centre
    padding, which would need the future)."""

    def __init__(self, features: FeatureConfig) -> None:
        self.features = features
        self.window, self.fb = mel_constants(features)
        self.reset()

    def reset(self) -> None:
        self.pending = torch.zeros(0)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """New complete frames (n_mels, n) for `audio` (1-D float32) appended to the stream."""
        f = self.features
        buf = torch.cat([self.pending, audio])
        n = 0 if len(buf) < f.n_fft else (len(buf) - f.n_fft) // f.hop_length + 1
        if n == 0:
            self.pending = buf
            return torch.zeros(f.n_mels, 0)
        used = buf[: (n - 1) * f.hop_length + f.n_fft]
        self.pending = buf[n * f.hop_length :]
        with torch.no_grad():
            return frames_log_mel(used, self.window, self.fb, f.n_fft, f.hop_length)


class StreamingDetector:
    """Chunks of audio in, P(keyword) per conv step out; `reset()` starts a new stream."""

    def __init__(
        self,
        model: nn.Module,
        features: FeatureConfig,
        window_frames: int | None = None,
        step: int = 1,
        state: str = "window",
    ) -> None:
        if state not in ("window", "carry"):
            raise ValueError(f"state={state!r}: expected 'window' or 'carry'")
        cfg = model.config
        self.model = model.eval()
        self.features = features
        self.state = state
        self.kernel_t, self.stride_t = cfg.kernel_size[1], cfg.stride[1]
        frames = window_frames or features.clip_frames  # max_window_length
        self.window = (frames - self.kernel_t) // self.stride_t + 1  # conv steps per window
        if self.window < 1:
            raise ValueError(f"window of {frames} frames is shorter than the conv kernel")
        self.window_frames = (self.window - 1) * self.stride_t + self.kernel_t
        self.step = step  # streaming_step_size, in conv steps
        self.dtype = input_dtype(model)
        self.logmel = LogMelStream(features)
        self.reset()

    @property
    def window_seconds(self) -> float:
        """Seconds of audio one output looks at."""
        return self.window_frames * self.features.hop_length / self.features.sample_rate

    def flush(self) -> StreamOutput:
        """End of stream: feed half a window of silence, so a keyword in the last moments is
        scored in mid-window, as training saw words followed by silence."""
        f = self.features
        return self.process(np.zeros(self.window_frames * f.hop_length // 2, np.float32))

    def reset(self) -> None:
        f = self.features
        self.logmel.reset()
        # frames not yet consumed by a conv step, primed with a window of silence
        self.frames = torch.full((f.n_mels, self.window_frames - self.stride_t), LOG_FLOOR_LOG)
        self.conv_steps = 0  # conv steps computed so far (silence prefix included)
        self.history = torch.zeros(0, self._conv_width())  # last `window` conv outputs
        self.gru_out = None  # carry mode: last `window` GRU outputs and their energies
        self.energy = None
        self.hidden = None
        self.silence_steps = (
            self.window_frames - self.stride_t - self.kernel_t
        ) // self.stride_t + 1
        self.emitted = 0

    def _conv_width(self) -> int:
        c = self.model.config
        f_out = (self.features.n_mels - c.kernel_size[0]) // c.stride[0] + 1
        return c.cnn_out_channels * f_out

    @torch.no_grad()
    def process(self, audio: np.ndarray | torch.Tensor) -> StreamOutput:
        """Feed `audio` (1-D float, the model's sample rate); get the steps it completed."""
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
        self.frames = torch.cat([self.frames, self.logmel(audio)], dim=1)
        n = (
            0
            if self.frames.shape[1] < self.kernel_t
            else ((self.frames.shape[1] - self.kernel_t) // self.stride_t + 1)
        )
        if n == 0:
            return _empty()
        used = self.frames[:, : (n - 1) * self.stride_t + self.kernel_t]
        self.frames = self.frames[:, n * self.stride_t :]
        conv = self.model.encode(used[None].to(self.dtype))[0]  # (n, C·F')
        first = self.conv_steps
        self.conv_steps += n
        probs, focus = self._score(conv)  # one per new conv step
        steps = np.arange(first, first + n)
        keep = steps >= self.silence_steps  # steps whose window holds real audio
        keep &= (steps - self.silence_steps) % self.step == 0
        times = self._end_time(steps)
        return StreamOutput(times[keep], probs[keep], focus[keep])

    def _end_time(self, steps: np.ndarray) -> np.ndarray:
        """Stream time (s) at the end of conv step `steps`' receptive field."""
        f = self.features
        prefix = self.window_frames - self.stride_t  # silence frames before the stream
        last_frame = steps * self.stride_t + self.kernel_t - 1 - prefix
        return (last_frame * f.hop_length + f.n_fft) / f.sample_rate

    def _score(self, conv: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        hist = torch.cat([self.history, conv.float()])  # (k + n, D)
        n, w = len(conv), self.window
        if self.state == "window":
            padded = _left_pad(hist, w - 1)
            windows = padded.unfold(0, w, 1)[-n:].transpose(1, 2)  # (n, w, D)
            out, _ = m.gru(windows.to(self.dtype))  # (n, w, H): fresh state per window
            pooled, weights = m.attention(out)
            logits = m.classifier(pooled).float()
        else:
            out, self.hidden = m.gru(conv[None].to(self.dtype), self.hidden)  # carried state
            out = out[0]
            energy = m.attention.energy(out).squeeze(-1)  # (n,)
            g = torch.cat([self.gru_out, out]) if self.gru_out is not None else out
            e = torch.cat([self.energy, energy]) if self.energy is not None else energy
            g_w = _left_pad(g, w - 1).unfold(0, w, 1)[-n:].transpose(1, 2)  # (n, w, H)
            e_w = _left_pad(e[:, None], w - 1, float("-inf"))[:, 0].unfold(0, w, 1)[-n:]
            weights = torch.softmax(e_w.float(), dim=-1)  # (n, w)
            pooled = torch.einsum("nw,nwh->nh", weights, g_w.float())
            logits = m.classifier(pooled.to(self.dtype)).float()
            self.gru_out, self.energy = (g[-(w - 1) :], e[-(w - 1) :]) if w > 1 else (g[:0], e[:0])
        self.history = hist[-(w - 1) :] if w > 1 else hist[:0]
        probs = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
        # where each window looked: attention-weighted centre of its conv steps, in seconds
        steps = self.conv_steps - n + np.arange(n)
        offsets = np.arange(-w + 1, 1)  # conv steps relative to the window's last one
        centres = self._centre_time(steps[:, None] + offsets[None, :])
        focus = (weights.float().numpy() * centres).sum(axis=1)
        return probs, focus

    def _centre_time(self, steps: np.ndarray) -> np.ndarray:
        f = self.features
        prefix = self.window_frames - self.stride_t
        centre_frame = steps * self.stride_t + (self.kernel_t - 1) / 2 - prefix
        return (centre_frame * f.hop_length + f.n_fft / 2) / f.sample_rate


def _left_pad(x: torch.Tensor, k: int, value: float = 0.0) -> torch.Tensor:
    """Prepend rows so the first output still has a full window (zeros: never attended to in
    window mode, since the GRU only ever sees real conv rows once the silence prefix is in)."""
    if k <= 0:
        return x
    pad = torch.full((k, *x.shape[1:]), value, dtype=x.dtype)
    return torch.cat([pad, x])


def _empty() -> StreamOutput:
    z = np.zeros(0)
    return StreamOutput(z, z, z)
