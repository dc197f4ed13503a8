"""The ONNX graphs `kws export --format onnx` writes, as torch modules to trace: window mode
(`WindowModel`: frames in, the conv once per step, each window's GRU from zero) and carry mode
(`CarryModel`: the GRU state in and out). The torch-free runtime (kwscli/runtime.py) keeps the
stream around them. For an int8 checkpoint the window graph is built from its dequantized weights
with the GRU unrolled and every Linear a MatMul (`int8_window_model`), so each layer torch runs in
int8 is one onnxruntime quantizes (kwscli/export.py does that, and puts the checkpoint's integers
back).
"""

from __future__ import annotations

import torch
from torch import nn

from kwscli.checkpoint import Checkpoint
from kwscli.errors import KwsError
from kwscli.inference import build_model
from kwscli.models.crnn import keyword_probability
from kwscli.shapes import StreamGeometry


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


def window_graph(ckpt: Checkpoint) -> tuple[nn.Module, tuple, dict]:
    """WindowModel (for an int8 checkpoint, the float graph to quantize: `int8_window_model`),
    example input (the frames of two windows) and the names and dynamic axes of its graph."""
    graph = (int8_window_model(ckpt) if ckpt.kind == "int8" else WindowModel(ckpt)).eval()
    g = StreamGeometry.of(ckpt.model, ckpt.features)
    example = (torch.zeros(1, ckpt.features.n_mels, g.window_frames + g.stride),)
    names = {"input_names": ["frames"], "output_names": ["p_keyword", "attention"],
             "dynamic_axes": {"frames": {2: "frames"}, "p_keyword": {0: "windows"},
                              "attention": {0: "windows"}}}  # fmt: skip
    return graph, example, names


def carry_graph(ckpt: Checkpoint) -> tuple[nn.Module, tuple, dict]:
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
