"""Export a model as a self-contained streaming TorchScript module: raw 16 kHz waveform chunks in,
P(keyword) per step out. Log-mel (a stored Hann window and mel filterbank), the state between
calls and the softmax are inside, so it runs with `torch` alone:

    m = torch.jit.load("model.streaming.ts")
    probs = m(chunk)       # chunk: float32 (N,), any N; probs: one per completed 80 ms step
    m.reset()              # a new stream

It computes exactly what `kws detect --state window` computes, step for step.

Or, with `--format onnx`, as the window model the torch-free runtime runs (kwscli/runtime.py).
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


class WindowModel(nn.Module):
    """The ONNX graph of `--state window` (StreamingDetector, window branch): the log-mel frames
    of k consecutive windows (1, n_mels, F), their k + window - 1 conv steps, in; P(keyword) (k,)
    and the attention over each window's conv steps (k, window) out. The conv runs once per step
    and the windows are gathered from its rows, as `take_windows` does; files before took the k
    windows of frames (input `logmel`), which ran the conv `window` times per step.

    An ONNX graph holds no state, so the stream (frames, the silence prefix, one window every
    conv stride) is kept by the runtime (kwscli/runtime.py), in numpy, from the front end stored
    in the file's metadata. Each call takes the previous call's last window - 1 steps again
    rather than carrying their conv rows: the conv is cheap beside the GRU, and an int8 graph's
    activation scales, set per call from what it is given, stay those of the windows' frames."""

    def __init__(self, ckpt: Checkpoint, model: nn.Module | None = None) -> None:
        super().__init__()
        self.model = (model if model is not None else build_model(ckpt)).float()
        self.window = StreamGeometry.of(ckpt.model, ckpt.features).window
        self.requires_grad_(False)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, w = self.model, self.window
        conv = m.encode(frames)[0]  # (k + w - 1, C·F')
        k = conv.shape[0] - w + 1
        windows = conv[torch.arange(k)[:, None] + torch.arange(w)[None, :]]  # (k, w, C·F')
        logits, weights, _ = m.classify(windows)
        return keyword_probability(logits), weights


class CarryModel(nn.Module):
    """The ONNX graph of `--state carry` (StreamingDetector._carry): the frames of n new conv
    steps, the GRU state and the last window - 1 GRU outputs and attention energies in; P(keyword)
    and the attention of each new step (n, window), and the next state, out. The runtime keeps
    the state between calls; it starts as zeros, and energies of -inf (no weight before the
    stream)."""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__()
        self.model = build_model(ckpt).float()
        if self.model.gru.bidirectional:
            raise KwsError(
                f"{ckpt.path}: a bidirectional GRU has no carried state; export it for "
                "--state window"
            )
        self.window = StreamGeometry.of(ckpt.model, ckpt.features).window
        self.requires_grad_(False)

    def forward(self, frames, hidden, outputs, energies):
        m, w = self.model, self.window
        conv = m.encode(frames)[0]  # (n, C·F')
        out, hidden = m.gru(conv[None], hidden)  # carried state
        out = out[0]  # (n, H)
        g = torch.cat([outputs, out])  # (w - 1 + n, H)
        e = torch.cat([energies, m.attention.energy(out).squeeze(-1)])  # (w - 1 + n,)
        n = out.shape[0]
        rows = torch.arange(n)[:, None] + torch.arange(w)[None, :]  # each step's window (n, w)
        weights = torch.softmax(e[rows], dim=-1)  # (n, w)
        pooled = (weights[:, :, None] * g[rows]).sum(1)  # (n, H)
        probs = keyword_probability(m.classifier(pooled))
        return probs, weights, hidden, g[n:], e[n:]


class MatMulLinear(nn.Module):
    """`nn.Linear` as `x @ Wᵀ + b`, Wᵀ stored: it exports as a MatMul on a constant, which
    onnxruntime's dynamic quantization makes int8 (a Linear on 2-D input exports as a Gemm,
    which it leaves float)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous())  # (in, out)
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight_t) + self.bias


class UnrolledGRU(nn.Module):
    """`nn.GRU` (batch_first, from a zero state) written out step by step, in MatMuls:
    onnxruntime quantizes MatMul (and LSTM) but not the ONNX GRU op, so this is the form in which
    a GRU keeps int8 weights. torch's equations and gate order (r, z, n):

        r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)       z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
        n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h  =  n + z ⊙ (h − n)

    The input term is one MatMul over the whole window, as torch computes it on CPU, with b_hr and
    b_hz added to it; the recurrent one is a MatMul per step (none at the first, where h = 0).
    Traced, the loop unrolls over the window's conv steps, which the exported graph fixes."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        self.hidden = h = gru.hidden_size
        directions = ["", "_reverse"] if gru.bidirectional else [""]
        self.suffixes = [[f"_l{n}{d}" for d in directions] for n in range(gru.num_layers)]
        p = {name: value.detach() for name, value in gru.named_parameters()}
        for sfx in sum(self.suffixes, []):
            b_hh = p[f"bias_hh{sfx}"]
            new = {
                f"weight_ih{sfx}_t": p[f"weight_ih{sfx}"].t(),  # (in, 3H): the int8 checkpoint's
                f"weight_hh{sfx}_t": p[f"weight_hh{sfx}"].t(),  # weights, transposed
                f"bias_i{sfx}": p[f"bias_ih{sfx}"] + torch.cat([b_hh[: 2 * h], b_hh.new_zeros(h)]),
                f"bias_hn{sfx}": b_hh[2 * h :],
            }
            for name, value in new.items():
                self.register_parameter(name, nn.Parameter(value.contiguous()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        for layer in self.suffixes:
            x = torch.cat([self._direction(x, sfx) for sfx in layer], dim=-1)  # (B, T, H·dirs)
        return x, None

    def _direction(self, x: torch.Tensor, sfx: str) -> torch.Tensor:
        w_hh, b_hn, size = (
            getattr(self, f"weight_hh{sfx}_t"),
            getattr(self, f"bias_hn{sfx}"),
            self.hidden,
        )
        gi = torch.matmul(x, getattr(self, f"weight_ih{sfx}_t")) + getattr(self, f"bias_i{sfx}")
        i_rz, i_n = gi.split([2 * size, size], dim=-1)  # (B, T, 2H), (B, T, H)
        steps = list(range(x.shape[1]))
        h: torch.Tensor | None = None
        out: list[torch.Tensor] = []
        for t in steps[::-1] if sfx.endswith("_reverse") else steps:
            if h is None:
                rz, h_n = torch.sigmoid(i_rz[:, t]), b_hn
            else:
                h_rz, h_n = torch.matmul(h, w_hh).split([2 * size, size], dim=-1)
                rz, h_n = torch.sigmoid(i_rz[:, t] + h_rz), h_n + b_hn
            r, z = rz.split([size, size], dim=-1)
            n = torch.tanh(i_n[:, t] + r * h_n)
            h = n - z * n if h is None else n + z * (h - n)
            out.append(h)
        return torch.stack(out[::-1] if sfx.endswith("_reverse") else out, dim=1)  # (B, T, H)


def int8_window_model(ckpt: Checkpoint) -> WindowModel:
    """The float graph of an int8 checkpoint, for onnxruntime to quantize: its dequantized
    weights (the values the int8 model multiplies by), the GRU unrolled and every Linear a
    MatMul, so that each layer torch runs in int8 is one onnxruntime quantizes."""
    from kwscli.inference import build_dequantized

    model = build_dequantized(ckpt)
    model.gru = UnrolledGRU(model.gru)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, MatMulLinear(module))
    return WindowModel(ckpt, model)


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
    """Write MODEL.onnx: the window model (`WindowModel`) with keyword, threshold and front end
    as metadata, for `kws detect MODEL.onnx` with or without torch (kwscli/runtime.py). An int8
    checkpoint is exported from its dequantized weights, then quantized by onnxruntime
    (`quantize_int8`), with the checkpoint's own integers."""
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
        graph, example, names = _carry_graph(ckpt)
    else:
        graph, example, names = _window_graph(ckpt)
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


def _window_graph(ckpt: Checkpoint) -> tuple[nn.Module, tuple, dict]:
    """WindowModel (for an int8 checkpoint, the float graph to quantize: `int8_window_model`),
    example input (the frames of two windows) and the names and dynamic axes of its graph."""
    graph = (int8_window_model(ckpt) if ckpt.kind == "int8" else WindowModel(ckpt)).eval()
    g = StreamGeometry.of(ckpt.model, ckpt.features)
    example = (torch.zeros(1, ckpt.features.n_mels, g.window_frames + g.stride),)
    names = {"input_names": ["frames"], "output_names": ["p_keyword", "attention"],
             "dynamic_axes": {"frames": {2: "frames"}, "p_keyword": {0: "windows"},
                              "attention": {0: "windows"}}}  # fmt: skip
    return graph, example, names


def _carry_graph(ckpt: Checkpoint) -> tuple[nn.Module, tuple, dict]:
    """CarryModel, example inputs (two conv steps) and the names and dynamic axes of its graph."""
    graph = CarryModel(ckpt).eval()
    g = StreamGeometry.of(ckpt.model, ckpt.features)
    gru = graph.model.gru
    example = (
        torch.zeros(1, ckpt.features.n_mels, g.kernel + g.stride),  # frames of 2 conv steps
        torch.zeros(gru.num_layers, 1, gru.hidden_size),
        torch.zeros(g.window - 1, gru.hidden_size),
        torch.full((g.window - 1,), -1e4),
    )
    names = {
        "input_names": ["frames", "hidden", "outputs", "energies"],
        "output_names": ["p_keyword", "attention", "next_hidden", "next_outputs", "next_energies"],
        "dynamic_axes": {"frames": {2: "frames"}, "p_keyword": {0: "steps"},
                         "attention": {0: "steps"}},
    }  # fmt: skip
    return graph, example, names


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
