"""Export a model as a self-contained streaming TorchScript module: raw 16 kHz waveform chunks in,
P(keyword) per step out. Log-mel (a stored Hann window and mel filterbank), the state between
calls and the softmax are inside, so it runs with `torch` alone:

    m = torch.jit.load("model.streaming.ts")
    probs = m(chunk)       # chunk: float32 (N,), any N; probs: one per completed 80 ms step
    m.reset()              # a new stream

It computes exactly what `kws detect --state window` computes, step for step.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.config import ExportFormat, StreamGeometry
from kwscli.errors import ConfigError, KwsError
from kwscli.extras import require
from kwscli.inference import build_model
from kwscli.models.crnn import keyword_probability
from kwscli.models.frontend import LogMel
from kwscli.models.streaming import ConvFrames, take_windows


class StreamingKWS(nn.Module):
    """TorchScript-able `StreamingDetector` in window mode: the same frame buffer (`ConvFrames`),
    the same windows (`take_windows`), the model's own conv and `classify`."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        self.model = build_model(ckpt).float()
        g = StreamGeometry.of(ckpt.model, ckpt.features)
        self.window = g.window
        self.conv_frames = ConvFrames(ckpt.features, g.kernel, g.stride, g.prefix_frames)
        self.register_buffer("history", torch.zeros(0, self.model.gru.input_size))
        self.requires_grad_(False)  # inference only: outputs need no autograd graph
        self.reset()

    @torch.jit.export
    def reset(self) -> None:
        self.conv_frames.reset()
        self.history = torch.zeros(0, self.history.shape[1])

    def forward(self, chunk: torch.Tensor) -> torch.Tensor:
        used = self.conv_frames(chunk)
        if used.shape[1] == 0:
            return torch.zeros(0)
        conv = self.model.encode(used[None])[0]  # (steps, C*F')
        windows, self.history = take_windows(self.history, conv, self.window)
        if windows.shape[0] == 0:
            return torch.zeros(0)  # the silence prefix: no full window yet
        logits, _, _ = self.model.classify(windows)
        return keyword_probability(logits)


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
    check_output(out, force, inputs=(ckpt.path,))
    # TorchScript is deprecated upstream, yet it is still the one format that carries a stateful
    # streaming module loadable with torch alone
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(StreamingKWS(ckpt)), str(tmp))
    return out


class WindowModel(nn.Module):
    """The ONNX graph: log-mel windows (B, n_mels, window_frames) in; P(keyword) (B,) and the
    attention over each window's conv steps (B, window) out. An ONNX graph holds no state, so
    the stream (frames, the silence prefix, one window every conv stride) is kept by the
    runtime (kwscli/runtime.py), in numpy, from the front end stored in the file's metadata."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        self.model = build_model(ckpt).float()
        self.requires_grad_(False)

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, weights, _ = self.model.outputs(logmel)
        return keyword_probability(logits), weights


def onnx_metadata(ckpt: Checkpoint) -> dict[str, str]:
    """What a runtime needs besides the graph: keyword, thresholds, the front end (its STFT
    window and mel filterbank, exactly the training ones) and the window geometry."""
    import base64
    import json

    from kwscli.detect import stored_threshold
    from kwscli.runtime import ONNX_FORMAT  # what the runtime reads is what is written
    from kwscli.version import __version__

    g = StreamGeometry.of(ckpt.model, ckpt.features)
    logmel = LogMel(ckpt.features)
    threshold, source = stored_threshold(ckpt, "window")

    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.float().contiguous().numpy().tobytes()).decode()

    return {
        "kws_format": ONNX_FORMAT,
        "kws_version": __version__,
        "keyword": ckpt.keyword,
        "kind": ckpt.kind,
        "source": ckpt.path.name if ckpt.path else "",
        "threshold": repr(float(threshold)),
        "threshold_from": source,
        "features": ckpt.features.model_dump_json(),
        "geometry": json.dumps(
            {
                "kernel": g.kernel,
                "stride": g.stride,
                "window": g.window,
                "window_frames": g.window_frames,
                "prefix_frames": g.prefix_frames,
            }
        ),  # fmt: skip
        "stft_window": b64(logmel.window),
        "mel_fb": b64(logmel.fb),  # (freqs, n_mels)
    }


def export_onnx(path: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write MODEL.onnx: the window model (`WindowModel`) with keyword, threshold and front end
    as metadata, for `kws detect MODEL.onnx` with or without torch (kwscli/runtime.py)."""
    from kwscli.files import atomic_write, check_output

    ckpt = load_checkpoint(path)
    if ckpt.kind == "int8":
        raise KwsError(
            f"{path} is int8: PyTorch's dynamic int8 GRU/Linear have no ONNX export; export the "
            "float or fp16 model it came from (ONNX Runtime can quantize the result itself)"
        )
    onnx = require("onnx")
    out = Path(out) if out else Path(path).with_suffix(".onnx")
    check_output(out, force, inputs=(ckpt.path,))
    graph = WindowModel(ckpt).eval()
    g = StreamGeometry.of(ckpt.model, ckpt.features)
    example = torch.zeros(1, ckpt.features.n_mels, g.window_frames)
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(tmp),
            input_names=["logmel"],
            output_names=["p_keyword", "attention"],
            dynamic_axes={"logmel": {0: "windows"}, "p_keyword": {0: "windows"},
                          "attention": {0: "windows"}},
            opset_version=17,
            dynamo=False,
        )  # fmt: skip
        model = onnx.load(str(tmp))
        for key, value in onnx_metadata(ckpt).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return out


def export_model(
    path: str | Path, format: str = "torchscript", out: str | Path | None = None, force=False
) -> Path:
    """`kws export`: the streaming TorchScript module, or the ONNX window model the runtime
    runs."""
    try:
        fmt = ExportFormat(format)
    except ValueError:
        raise ConfigError(f"--format {format!r}: expected torchscript or onnx") from None
    if fmt == ExportFormat.onnx:
        return export_onnx(path, out, force)
    return export_torchscript(path, out, force)
