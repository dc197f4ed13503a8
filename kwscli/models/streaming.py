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

import numpy as np
import torch
from torch import nn

from kwscli.config import FeatureConfig
from kwscli.detections import BLOCK_SECONDS, StreamOutput, attention_focus
from kwscli.models.crnn import input_dtype, keyword_probability
from kwscli.models.frontend import LOG_FLOOR_LOG, LogMel
from kwscli.shapes import StreamGeometry, conv_span, conv_steps


class ConvFrames(nn.Module):
    """Audio chunks (1-D float32, any size) in; out, the log-mel frames (n_mels, span) that
    complete new conv steps, each step's frames computed once. Frame k covers samples
    [k*hop, k*hop + n_fft) (no centre padding, which would need the future); the stream starts
    with `prefix` frames of digital silence. TorchScript-able (the exported module uses it)."""

    def __init__(self, features: FeatureConfig, kernel: int, stride: int, prefix: int) -> None:
        super().__init__()
        self.logmel = LogMel(features)
        self.kernel, self.stride, self.prefix = kernel, stride, prefix
        self.n_mels = features.n_mels
        self.silence = LOG_FLOOR_LOG  # an attribute: TorchScript cannot read a global float
        self.register_buffer("pending", torch.zeros(0), persistent=False)
        self.register_buffer("frames", torch.zeros(features.n_mels, 0), persistent=False)
        self.reset()

    @torch.jit.export
    def reset(self) -> None:
        self.pending = torch.zeros(0)
        self.frames = torch.full((self.n_mels, self.prefix), self.silence)

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        buf = torch.cat([self.pending, chunk.float()])
        n = self.logmel.frames(buf.shape[0])
        if n > 0:
            hop = self.logmel.hop
            new = self.logmel(buf[: conv_span(n, self.logmel.n_fft, hop)])
            self.frames = torch.cat([self.frames, new], dim=1)
            buf = buf[n * hop :]
        self.pending = buf
        steps = conv_steps(self.frames.shape[1], self.kernel, self.stride)
        if steps == 0:
            return self.frames[:, :0]
        used = self.frames[:, : conv_span(steps, self.kernel, self.stride)]
        self.frames = self.frames[:, steps * self.stride :]
        return used


def take_windows(
    history: torch.Tensor, new: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every full window of `window` rows ending in a row of `new` (k, window, D), and the rows
    (at most window - 1) the next call needs. `history` is what the last call returned."""
    rows = torch.cat([history, new])
    keep = window - 1
    rest = rows[max(0, rows.shape[0] - keep) :] if keep > 0 else rows[:0]
    if rows.shape[0] < window:
        return rows.new_zeros(0, window, rows.shape[1]), rest
    return rows.unfold(0, window, 1).transpose(1, 2), rest


class StreamingDetector:
    """Chunks of audio in, P(keyword) per conv step out; `reset()` starts a new stream."""

    score_seconds = BLOCK_SECONDS  # a block scores as one batch: `kws detect` reads 30 s

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
        self.model = model.eval()
        self.features = features
        self.state = state
        self.geometry = g = StreamGeometry.of(model.config, features, window_frames)
        self.window, self.stride_t, self.window_frames = g.window, g.stride, g.window_frames
        self.step = step  # streaming_step_size, in conv steps
        self.dtype = input_dtype(model)
        self.conv_frames = ConvFrames(features, g.kernel, g.stride, g.prefix_frames)
        self.reset()

    @property
    def window_seconds(self) -> float:
        """Seconds of audio one output looks at."""
        return self.geometry.window_seconds

    def flush(self) -> StreamOutput:
        """End of stream: feed half a window of silence, so a keyword in the last moments is
        scored in mid-window, as training saw words followed by silence."""
        half = self.window_frames * self.features.hop_length // 2
        return self.process(np.zeros(half, np.float32))

    def reset(self) -> None:
        self.conv_frames.reset()
        self.conv_steps = 0  # conv steps computed so far (silence prefix included)
        self.history = torch.zeros(0, self.model.gru.input_size)  # last `window` - 1 conv rows
        self.gru_out = None  # carry mode: last `window` GRU outputs and their energies
        self.energy = None
        self.hidden = None

    @torch.no_grad()
    def process(self, audio: np.ndarray | torch.Tensor) -> StreamOutput:
        """Feed `audio` (1-D float, the model's sample rate); get the steps it completed."""
        used = self.conv_frames(torch.as_tensor(np.asarray(audio, dtype=np.float32)))
        if used.shape[1] == 0:
            return StreamOutput.empty()
        conv = self.model.encode(used[None].to(self.dtype))[0].float()  # (n, C·F')
        self.conv_steps += len(conv)
        if self.state == "window":
            windows, self.history = take_windows(self.history, conv, self.window)
            logits, weights, _ = self.model.classify(windows.to(self.dtype))
        else:
            logits, weights = self._carry(conv)
        probs = keyword_probability(logits).double().numpy()
        steps = np.arange(self.conv_steps - len(probs), self.conv_steps)
        keep = steps >= self.window - 1  # the first window - 1 steps end inside the silence prefix
        keep &= (steps - self.window + 1) % self.step == 0
        # where each window looked: attention-weighted centre of its conv steps, in seconds
        focus = attention_focus(
            weights.double().numpy(), self.geometry.centre_time(steps), self.geometry.step_seconds
        )
        return StreamOutput(self.geometry.end_time(steps)[keep], probs[keep], focus[keep])

    def _carry(self, conv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU state carried over the whole stream; attention pools the last `window`
        outputs. One logit row and one weight row per new conv step."""
        m, n, w = self.model, len(conv), self.window
        out, self.hidden = m.gru(conv[None].to(self.dtype), self.hidden)  # carried state
        out = out[0]
        energy = m.attention.energy(out).squeeze(-1)  # (n,)
        g = torch.cat([self.gru_out, out]) if self.gru_out is not None else out
        e = torch.cat([self.energy, energy]) if self.energy is not None else energy
        g_w = _left_pad(g, w - 1).unfold(0, w, 1)[-n:].transpose(1, 2)  # (n, w, H)
        e_w = _left_pad(e[:, None], w - 1, float("-inf"))[:, 0].unfold(0, w, 1)[-n:]
        weights = torch.softmax(e_w.float(), dim=-1)  # (n, w)
        pooled = torch.einsum("nw,nwh->nh", weights, g_w.float())
        logits = m.classifier(pooled.to(self.dtype))
        self.gru_out, self.energy = (g[-(w - 1) :], e[-(w - 1) :]) if w > 1 else (g[:0], e[:0])
        return logits, weights


def _left_pad(x: torch.Tensor, k: int, value: float = 0.0) -> torch.Tensor:
    """Prepend rows so the first output has a full window (its outputs are dropped: they end
    inside the silence prefix)."""
    if k <= 0:
        return x
    pad = torch.full((k, *x.shape[1:]), value, dtype=x.dtype)
    return torch.cat([pad, x])
