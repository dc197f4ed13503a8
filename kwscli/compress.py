"""Post-training compression: int8 GRU/Linear weights and fp16, as safe checkpoints.

int8 uses PyTorch's dynamic quantization (`torch.ao.quantization.quantize_dynamic`: int8 weights,
activations quantized on the fly) where the installed torch has it. The checkpoint stores the int8
weights with their scale and zero point as plain tensors — never a pickled module — and rebuilding
puts exactly those integers back into a freshly quantized model. Where dynamic quantization is not
available, the same checkpoint runs as a weight-only int8 model (weights dequantized on load).

The conv layer of an int8 model stays float32 by default (`conv="float"`); `conv="int8"` quantizes
it dynamically too, `conv="fp16"` keeps it in half precision in front of the int8 GRU/Linear.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kwscli import metrics
from kwscli.checkpoint import Checkpoint, Int8Info, SourceInfo
from kwscli.config import ConvPrecision
from kwscli.errors import ConfigError, KwsError
from kwscli.evaluate import load_split, missing_data, model_cost, trained_on_here
from kwscli.files import check_output
from kwscli.inference import (
    _quantize_dynamic,
    _quantized_weights,
    build_model,
    predict_logits,
    probabilities,
)


def check_conv_mode(conv: str) -> ConvPrecision:
    try:
        return ConvPrecision(conv)
    except ValueError:
        choices = ", ".join(c.value for c in ConvPrecision)
        raise ConfigError(f"--conv {conv!r}: choose one of {choices}") from None


def to_int8(ckpt: Checkpoint, conv: str = "float") -> Checkpoint:
    """int8 checkpoint of a float one: GRU and Linear weights as int8 + per-tensor scale; the conv
    as float32, int8 or fp16 (`conv`)."""
    conv = check_conv_mode(conv)
    float_model = build_model(ckpt)
    qmodel = _quantize_dynamic(copy.deepcopy(float_model), conv)
    state: dict[str, torch.Tensor] = {}
    quantized: list[str] = []
    for name, module in qmodel.named_modules():
        weights = _quantized_weights(module)
        if weights is None:
            continue
        for key, w in weights.items():
            full = f"{name}.{key}"
            state[full + ".int8"] = w.int_repr().clone()
            state[full + ".scale"] = torch.tensor(w.q_scale(), dtype=torch.float64)
            state[full + ".zero_point"] = torch.tensor(w.q_zero_point(), dtype=torch.int64)
            quantized.append(full)
    for key, value in float_model.state_dict().items():
        if key not in quantized:  # every bias stays float32; the conv as asked
            half = conv == "fp16" and key.startswith("conv.")
            state[key] = value.half() if half else value.clone()
    return _derived(ckpt, "int8", state, int8=Int8Info(quantized=quantized, conv=conv))


def to_fp16(ckpt: Checkpoint) -> Checkpoint:
    """Half-precision checkpoint: every weight stored in float16 (`kws evaluate` runs it in
    float16; the CPU stream computes in float32 from those weights, kwscli/detect.py)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    return _derived(ckpt, "fp16", state)


def _derived(ckpt: Checkpoint, kind: str, state: dict, int8: Int8Info | None = None) -> Checkpoint:
    """A compressed copy: same model, features, keyword and threshold; metrics measured anew;
    provenance kept, with where it came from. A calibration is kept under another name: its
    threshold was measured on the model before compression."""
    p = ckpt.provenance
    update = {"source": _source(ckpt), "int8": int8, "calibration": None}
    if p.calibration:
        update["calibration_before_compression"] = p.calibration
    return Checkpoint(
        kind,
        ckpt.model,
        ckpt.features,
        ckpt.keyword,
        state,
        metrics={},
        threshold=ckpt.threshold,
        provenance=p.model_copy(update=update),
    )


def _source(ckpt: Checkpoint) -> SourceInfo:
    return SourceInfo(
        path=str(ckpt.path) if ckpt.path else None, kind=ckpt.kind, metrics=ckpt.metrics
    )


def compress_checkpoint(
    path: str | Path,
    kind: str,
    out: str | Path | None = None,
    data: str | Path | None = None,
    tolerance: float = 0.1,
    force: bool = False,
    conv: str = "float",
):
    """`kws quantize` / `kws fp16`: convert, compare on the validation split, save beside the
    input. Returns None (and writes nothing) when the model already is `kind`."""
    from kwscli.checkpoint import load_checkpoint, save_checkpoint

    check_conv_mode(conv)  # before any work
    if tolerance < 0:
        raise ConfigError(f"--tolerance {tolerance}: must be ≥ 0 (0.1 = warn past 10% worse)")
    src = load_checkpoint(path)
    if src.kind == kind:
        return None
    if src.kind not in ("teacher", "student"):
        source = src.provenance.source
        raise KwsError(
            f"{path} is {src.kind}; {kind} needs the float model it came from "
            f"({(source and source.path) or 'its teacher/student .pt'})"
        )
    out = Path(out) if out else Path(path).with_suffix(f".{kind}.pt")
    check_output(out, force, inputs=(src.path,))
    converted = to_int8(src, conv) if kind == "int8" else to_fp16(src)
    report = compare_compressed(src, converted, out, data, tolerance=tolerance)
    if report.au_fa_fr_after is not None:
        converted.metrics = {
            "val_au_fa_fr": report.au_fa_fr_after,
            "source_val_au_fa_fr": report.au_fa_fr_before,
        }
    save_checkpoint(converted, out)
    return report


# ---------------------------------------------------------------- before/after


@dataclass
class CompressionReport:
    """Before/after of `kws quantize` / `kws fp16`, and where any degradation comes from."""

    source: str
    output: str
    kind: str
    label: str  # the kind, with the conv precision of an int8 model
    size_before: int
    size_after: int
    macs_2s: int
    data: str | None
    au_fa_fr_before: float | None = None
    au_fa_fr_after: float | None = None
    max_abs_dprob: float | None = None  # largest change of P(keyword) over the split
    max_abs_dlogit: float | None = None
    distinct_before: int | None = None  # distinct P(keyword) values: fewer = more ties
    distinct_after: int | None = None
    degraded: bool = False
    tolerance: float = 0.1
    note: str | None = None  # why before and after were not compared

    def to_dict(self) -> dict:
        return asdict(self)


def compare_compressed(
    src: Checkpoint,
    out: Checkpoint,
    out_path: Path,
    data_path: str | Path | None,
    split: str = "val",
    tolerance: float = 0.1,
) -> CompressionReport:
    """Run both models on the same clips. `degraded` when au_fa_fr grows by more than
    `tolerance` (relative) — with the logit and probability changes that explain it."""
    src_model, out_model = build_model(src), build_model(out)
    cost = model_cost(out, out_model)
    rep = CompressionReport(
        source=str(src.path),
        output=str(out_path),
        kind=out.kind,
        label=out.label,
        size_before=metrics.size_bytes(src_model),  # the same measure model_cost uses
        size_after=cost.size_bytes,
        macs_2s=cost.macs_2s,
        data=None,
        tolerance=tolerance,
    )
    if data_path is None and not trained_on_here(src):
        rep.note = missing_data(src) + ": pass --data DIR to compare au_fa_fr"
        return rep  # sizes still stand
    data = load_split(src, data_path, split)
    before, after = (
        predict_logits(src_model, data.features),
        predict_logits(out_model, data.features),
    )
    p0, p1 = probabilities(before), probabilities(after)
    rep.data = data.data
    rep.au_fa_fr_before = metrics.au_fa_fr(p0, data.labels)
    rep.au_fa_fr_after = metrics.au_fa_fr(p1, data.labels)
    rep.max_abs_dprob = float(np.max(np.abs(p1 - p0)))
    rep.max_abs_dlogit = float((after - before).abs().max())
    rep.distinct_before, rep.distinct_after = len(np.unique(p0)), len(np.unique(p1))
    rep.degraded = rep.au_fa_fr_after > rep.au_fa_fr_before * (1 + tolerance) + 1e-12
    return rep
