"""Export a model as a self-contained streaming TorchScript module: raw 16 kHz waveform chunks in,
P(keyword) per step out. Log-mel (a stored Hann window and mel filterbank), the state between
calls and the softmax are inside, so it runs with `torch` alone:

    m = torch.jit.load("model.streaming.ts")
    probs = m(chunk)       # chunk: float32 (N,), any N; probs: one per completed 80 ms step
    m.reset()              # a new stream

It computes exactly what `kws detect --state window` computes, step for step.

Or, with `--format onnx`, as a graph the torch-free runtime runs (kwscli/runtime.py), in window
or carry mode (the graphs: kwscli/onnx_graphs.py).
An int8 checkpoint keeps its integers there: its float graph (dequantized weights, GRU unrolled
into MatMuls) is quantized by onnxruntime, and the checkpoint's integers are put back in.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.config import ExportFormat
from kwscli.errors import ConfigError, KwsError
from kwscli.extras import installed, require
from kwscli.inference import build_model
from kwscli.models.crnn import keyword_probability
from kwscli.models.frontend import LogMel
from kwscli.models.streaming import ConvFrames, take_windows
from kwscli.onnx_graphs import carry_graph, window_graph
from kwscli.shapes import StreamGeometry


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
            "export it with --format onnx (int8 weights, run by onnxruntime) or export the float "
            "or fp16 model it came from"
        )
    out = Path(out) if out else Path(path).with_suffix(".streaming.ts")
    check_output(out, force, inputs=(ckpt.path,))
    # TorchScript is deprecated upstream, yet it is still the one format that carries a stateful
    # streaming module loadable with torch alone
    with warnings.catch_warnings(), atomic_write(out) as tmp:
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(StreamingKWS(ckpt)), str(tmp))
    return out


def quantize_int8(plain: Path, ckpt: Checkpoint):
    """onnxruntime's dynamic quantization of the float graph (`quantize_dynamic`: int8 weights,
    per tensor, activations quantized on the fly, as PyTorch's; the conv too where the checkpoint
    has it in int8), then the checkpoint's own integers and scales put in place of the ones it
    recomputed. Returns the ModelProto."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    spec = ckpt.provenance.int8
    quantized = Path(plain).with_name("int8.onnx")
    with _quiet_root_logger():  # it advises pre-processing on the root logger
        quantize_dynamic(
            plain,
            quantized,
            op_types_to_quantize=["MatMul", "Conv"] if spec and spec.conv == "int8" else ["MatMul"],
            per_channel=False,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    model = onnx.load(str(quantized))
    del model.graph.value_info[:]  # shapes its inference noted: optional, a third of the file
    _pin_integers(model, ckpt)
    return model


def _pin_integers(model, ckpt: Checkpoint) -> None:
    """Each int8 weight of the quantized graph set to the checkpoint's integers, scale and zero
    point. onnxruntime's symmetric scale is max|w| / 127 and torch's observer chose another, so
    rounding the dequantized weights again moves some by a step (6 % of the bundled student's)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    weights = {
        n
        for n, i in inits.items()
        if n.endswith("_quantized") and i.data_type == onnx.TensorProto.INT8
    }
    state = ckpt.state_dict
    for key in ckpt.provenance.int8.quantized if ckpt.provenance.int8 else []:
        transposed = f"model.{key}_t_quantized" in weights  # a MatMul multiplies by Wᵀ
        base = f"model.{key}_t" if transposed else f"model.{key}"
        if base + "_quantized" not in weights:
            raise KwsError(f"int8 export: onnxruntime left {key} in float, expected int8")
        q = state[key + ".int8"]
        exact = {
            "_quantized": (q.t() if transposed else q).contiguous().numpy(),
            "_scale": np.float32(state[key + ".scale"]),
            "_zero_point": np.int8(state[key + ".zero_point"]),
        }
        for suffix, value in exact.items():
            old = inits[base + suffix]
            old.CopyFrom(numpy_helper.from_array(np.asarray(value).reshape(old.dims), old.name))
        weights.discard(base + "_quantized")
    if weights:
        raise KwsError(f"int8 export: int8 weights the checkpoint does not have: {sorted(weights)}")


@contextlib.contextmanager
def _quiet_root_logger():
    """Root-logger messages dropped, and no stderr handler left behind: a first message with no
    handler would install one for the rest of the process (logging.basicConfig)."""
    root, null = logging.getLogger(), logging.NullHandler()
    before = root.manager.disable
    root.addHandler(null)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)
        root.removeHandler(null)


def onnx_metadata(ckpt: Checkpoint, state: str = "window") -> dict[str, str]:
    """What a runtime needs besides the graph: keyword, thresholds, the front end (its STFT
    window and mel filterbank, exactly the training ones) and the window geometry."""
    import base64
    import json

    from kwscli.detect import stored_threshold
    from kwscli.runtime import ONNX_FORMAT  # what the runtime reads is what is written
    from kwscli.version import __version__

    g = StreamGeometry.of(ckpt.model, ckpt.features)
    logmel = LogMel(ckpt.features)
    threshold, source = stored_threshold(ckpt, state)

    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.float().contiguous().numpy().tobytes()).decode()

    return {
        "kws_format": ONNX_FORMAT,
        "kws_version": __version__,
        "keyword": ckpt.keyword,
        "kind": ckpt.kind,
        "precision": onnx_precision(ckpt),
        "source": ckpt.path.name if ckpt.path else "",
        "threshold": repr(float(threshold)),
        "threshold_from": source,
        "state": state,
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


def onnx_precision(ckpt: Checkpoint) -> str:
    """What the exported graph computes in, for `kws detect`'s header."""
    if ckpt.kind == "int8":
        conv = ckpt.provenance.int8.conv if ckpt.provenance.int8 else "float"
        return f"int8 weights, conv {'int8' if conv == 'int8' else 'float32'}"
    return "float32 (fp16 weights)" if ckpt.kind == "fp16" else "float32"


def export_onnx(
    path: str | Path, out: str | Path | None = None, force: bool = False, state: str = "window"
) -> Path:
    """Write MODEL.onnx: the window or carry graph (kwscli/onnx_graphs.py) with keyword,
    threshold and front end as metadata, for `kws detect MODEL.onnx` with or without torch
    (kwscli/runtime.py). An int8 checkpoint is exported from its dequantized weights, then
    quantized by onnxruntime (`quantize_int8`), with the checkpoint's own integers."""
    import tempfile

    from kwscli.files import atomic_write, check_output

    ckpt = load_checkpoint(path)
    onnx = require("onnx")
    if ckpt.kind == "int8" and not installed("onnxruntime"):
        raise KwsError(
            'an int8 model is quantized for ONNX by onnxruntime: pip install "kws[onnx]"'
        )
    if state == "carry" and ckpt.kind == "int8":
        raise KwsError(
            f"{path} is int8: its ONNX form unrolls the GRU over one window, so it runs "
            "--state window only; export the float or fp16 model it came from for --state carry"
        )
    out = Path(out) if out else Path(path).with_suffix(".onnx")
    check_output(out, force, inputs=(ckpt.path,))
    if state == "carry":
        graph, example, names = carry_graph(ckpt)
    else:
        graph, example, names = window_graph(ckpt)
    with (
        warnings.catch_warnings(),
        atomic_write(out) as tmp,
        tempfile.TemporaryDirectory(prefix="kws-export-") as work,
    ):
        warnings.simplefilter("ignore")
        plain = Path(work) / "float.onnx"
        torch.onnx.export(graph, example, str(plain), opset_version=17, dynamo=False, **names)
        model = quantize_int8(plain, ckpt) if ckpt.kind == "int8" else onnx.load(str(plain))
        del model.metadata_props[:]  # ours only, whatever the quantizer kept or added
        for key, value in onnx_metadata(ckpt, state).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return out


def export_model(
    path: str | Path,
    format: str = "torchscript",
    out: str | Path | None = None,
    force=False,
    state: str = "window",
) -> Path:
    """`kws export`: the streaming TorchScript module (window mode), or an ONNX model the runtime
    runs in `state` mode (window: the window scorer; carry: the GRU step with its state)."""
    try:
        fmt = ExportFormat(format)
    except ValueError:
        raise ConfigError(f"--format {format!r}: expected torchscript or onnx") from None
    if str(state) not in ("window", "carry"):
        raise ConfigError(f"--state {state!r}: expected window or carry")
    if fmt == ExportFormat.onnx:
        return export_onnx(path, out, force, str(state))
    if str(state) != "window":
        raise ConfigError(
            "--state carry: the TorchScript module runs window mode; use --format onnx for carry"
        )
    return export_torchscript(path, out, force)
