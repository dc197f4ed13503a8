"""Export a model as a self-contained streaming TorchScript module: raw 16 kHz waveform chunks in,
P(keyword) per step out. Log-mel (a stored Hann window and mel filterbank), the state between
calls and the softmax are inside, so it runs with `torch` alone:

    m = torch.jit.load("model.streaming.ts")
    probs = m(chunk)       # chunk: float32 (N,), any N; probs: one per completed 80 ms step
    m.reset()              # a new stream

It computes exactly what `kws detect --state window` computes, step for step.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from kwscli.audio import LOG_FLOOR_LOG
from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.errors import KwsError
from kwscli.inference import build_model
from kwscli.models.crnn import AttentionPooling
from kwscli.models.streaming import frames_log_mel, mel_constants


class StreamingKWS(nn.Module):
    """TorchScript-able twin of `StreamingDetector` (window mode) with its own log-mel."""

    def __init__(self, ckpt: Checkpoint) -> None:

        super().__init__()
        model = build_model(ckpt).float()
        f, c = ckpt.features, ckpt.model
        self.n_fft, self.hop, self.n_mels = f.n_fft, f.hop_length, f.n_mels
        self.kernel_t, self.stride_t = c.kernel_size[1], c.stride[1]
        self.window = (f.clip_frames - self.kernel_t) // self.stride_t + 1
        self.window_frames = (self.window - 1) * self.stride_t + self.kernel_t
        self.conv = model.conv
        self.gru = model.gru
        self.attention: AttentionPooling = model.attention
        self.classifier = model.classifier
        window, fb = mel_constants(f)
        self.register_buffer("stft_window", window)
        self.register_buffer("mel_fb", fb)  # (freqs, n_mels)
        self.log_floor = LOG_FLOOR_LOG
        width = model.gru.input_size
        self.register_buffer("pending", torch.zeros(0))
        self.register_buffer("frames", torch.zeros(f.n_mels, 0))
        self.register_buffer("history", torch.zeros(0, width))
        self.requires_grad_(False)  # inference only: outputs need no autograd graph
        self.reset()

    @torch.jit.export
    def reset(self) -> None:
        self.pending = torch.zeros(0)
        self.frames = torch.full((self.n_mels, self.window_frames - self.stride_t), self.log_floor)
        self.history = torch.zeros(0, self.history.shape[1])

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        buf = torch.cat([self.pending, chunk.float()])
        n = 0 if buf.shape[0] < self.n_fft else (buf.shape[0] - self.n_fft) // self.hop + 1
        if n > 0:
            samples = buf[: (n - 1) * self.hop + self.n_fft]
            new = frames_log_mel(samples, self.stft_window, self.mel_fb, self.n_fft, self.hop)
            self.frames = torch.cat([self.frames, new], dim=1)
            buf = buf[n * self.hop :]
        self.pending = buf
        total = self.frames.shape[1]
        steps = 0 if total < self.kernel_t else (total - self.kernel_t) // self.stride_t + 1
        if steps == 0:
            return torch.zeros(0)
        used = self.frames[:, : (steps - 1) * self.stride_t + self.kernel_t]
        self.frames = self.frames[:, steps * self.stride_t :]
        conv = self.conv(used[None, None]).transpose(1, 2)[0]  # (steps, C*F')
        hist = torch.cat([self.history, conv])
        keep = self.window - 1
        self.history = hist[max(0, hist.shape[0] - keep) :] if keep > 0 else hist[:0]
        if hist.shape[0] < self.window:
            return torch.zeros(0)  # the silence prefix: no full window yet
        windows = hist.unfold(0, self.window, 1).transpose(1, 2)  # (k, window, C*F')
        out, _ = self.gru(windows)
        pooled, _ = self.attention(out)
        return torch.softmax(self.classifier(pooled), dim=-1)[:, 1]


def export_torchscript(
    path: str | Path, out: str | Path | None = None, force: bool = False
) -> Path:
    """Write MODEL.streaming.ts beside the checkpoint (or `out`)."""
    from kwscli.files import atomic_write, check_output

    ckpt = load_checkpoint(path)
    if ckpt.kind == "int8":
        raise KwsError(
            f"{path} is int8: dynamic-quantized GRUs do not script into a standalone module; "
            "export the float or fp16 model it came from"
        )
    out = Path(out) if out else Path(path).with_suffix(".streaming.ts")
    check_output(out, force)
    import warnings

    # TorchScript is deprecated upstream, yet it is still the one format that carries a stateful
    # streaming module loadable with torch alone
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(StreamingKWS(ckpt)), str(tmp))
    return out


class WindowScorer(nn.Module):
    """ONNX-exportable: the last `window_samples` of 16 kHz audio in, P(keyword) out, for a batch
    of windows. An ONNX graph holds no state, so the caller keeps the stream: a ring buffer of the
    last window, scored every `step_samples` (80 ms for the teacher). The STFT is a matmul with a
    windowed DFT basis (ONNX export has no rfft); results equal `kws detect --state window`."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        model = build_model(ckpt).float()
        f, c = ckpt.features, ckpt.model
        self.n_fft, self.hop = f.n_fft, f.hop_length
        window_steps = (f.clip_frames - c.kernel_size[1]) // c.stride[1] + 1
        frames = (window_steps - 1) * c.stride[1] + c.kernel_size[1]
        self.window_samples = (frames - 1) * f.hop_length + f.n_fft
        self.step_samples = c.stride[1] * f.hop_length
        self.conv, self.gru = model.conv, model.gru
        self.attention, self.classifier = model.attention, model.classifier
        window, fb = mel_constants(f)
        k = torch.arange(f.n_fft, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * torch.arange(f.n_fft // 2 + 1, dtype=torch.float64) / f.n_fft
        self.register_buffer("dft_cos", (torch.cos(angle) * window[:, None]).float())
        self.register_buffer("dft_sin", (torch.sin(angle) * window[:, None]).float())
        self.register_buffer("mel_fb", fb)
        self.requires_grad_(False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio.unfold(1, self.n_fft, self.hop)  # (B, n, n_fft)
        power = (frames @ self.dft_cos).pow(2) + (frames @ self.dft_sin).pow(2)  # (B, n, freqs)
        logmel = torch.log((power @ self.mel_fb).clamp(1e-9, 1e9)).transpose(1, 2)
        x = self.conv(logmel.unsqueeze(1)).transpose(1, 2)  # (B, steps, C*F')
        h, _ = self.gru(x)
        pooled, _ = self.attention(h)
        return torch.softmax(self.classifier(pooled), dim=-1)[:, 1]


def export_onnx(path: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write MODEL.window.onnx: a stateless window scorer (see `WindowScorer`)."""
    from kwscli.files import atomic_write, check_output

    ckpt = load_checkpoint(path)
    if ckpt.kind == "int8":
        raise KwsError(
            f"{path} is int8: PyTorch's dynamic int8 GRU/Linear have no ONNX export; export the "
            "float or fp16 model it came from (ONNX Runtime can quantize the result itself)"
        )
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise KwsError("ONNX export needs the onnx package: pip install 'kws[onnx]'") from None
    out = Path(out) if out else Path(path).with_suffix(".window.onnx")
    check_output(out, force)
    scorer = WindowScorer(ckpt).eval()
    example = torch.zeros(1, scorer.window_samples)
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            (example,),
            str(tmp),
            input_names=["audio"],
            output_names=["p_keyword"],
            dynamic_axes={"audio": {0: "windows"}, "p_keyword": {0: "windows"}},
            opset_version=17,
            dynamo=False,
        )
    return out
