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
import warnings
from pathlib import Path

import torch
from torch import nn

from kwscli.checkpoint import Checkpoint, load_weights
from kwscli.errors import CheckpointError, ConfigError, KwsError
from kwscli.files import check_output
from kwscli.models.crnn import CRNN, HalfPrecision

INT8_SUFFIXES = (".int8", ".scale", ".zero_point")
CONV_MODES = ("float", "int8", "fp16")


def check_conv_mode(conv: str) -> None:
    if conv not in CONV_MODES:
        raise ConfigError(f"--conv {conv!r}: choose one of {', '.join(CONV_MODES)}")


def _quantize_dynamic(model: nn.Module, conv: str = "float") -> nn.Module:
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    from torch.ao.quantization.quantization_mappings import (
        DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS,
    )

    layers = {nn.GRU: default_dynamic_qconfig, nn.Linear: default_dynamic_qconfig}
    mapping = dict(DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS)
    if conv == "int8":  # not in torch's default mapping, but torch has the module
        layers[nn.Conv2d] = default_dynamic_qconfig
        mapping[nn.Conv2d] = nnqd.Conv2d
    with warnings.catch_warnings():  # deprecated in favour of torchao, which has no GRU
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, layers, dtype=torch.qint8, mapping=mapping)


def dynamic_int8_available() -> bool:
    try:
        _quantize_dynamic(nn.Sequential(nn.Linear(2, 2)))(torch.zeros(1, 2))
        return True
    except Exception:
        return False


def to_int8(ckpt: Checkpoint, conv: str = "float") -> Checkpoint:
    """int8 checkpoint of a float one: GRU and Linear weights as int8 + per-tensor scale; the conv
    as float32, int8 or fp16 (`conv`)."""
    from kwscli.checkpoint import build_model

    check_conv_mode(conv)
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
    int8 = {"quantized": quantized, "scheme": "per-tensor affine qint8", "conv": conv}
    return _derived(ckpt, "int8", state, int8=int8)


def _quantized_weights(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """{'weight_ih_l0': qtensor, ...} of a dynamic-quantized module, None for other modules."""
    from torch.ao.nn.quantized import dynamic as nnqd

    if isinstance(module, (nnqd.Linear, nnqd.Conv2d)):
        return {"weight": module.weight()}
    if isinstance(module, nnqd.GRU):
        return dict(module.get_weight())
    return None


def build_int8(ckpt: Checkpoint) -> nn.Module:
    """The int8 model a checkpoint describes, with exactly its stored integers."""
    state = ckpt.state_dict
    spec = ckpt.info.get("int8", {})
    names, conv = spec.get("quantized", []), spec.get("conv", "float")
    if conv not in CONV_MODES:
        raise CheckpointError(f"{ckpt.path}: damaged int8 checkpoint: unknown conv mode {conv!r}")
    try:
        deq = {
            n: (state[n + ".int8"].float() - state[n + ".zero_point"]) * state[n + ".scale"]
            for n in names
        }
    except KeyError as exc:
        raise CheckpointError(f"{ckpt.path}: damaged int8 checkpoint: no {exc.args[0]!r}") from None
    # everything not int8, in float32 (an fp16 conv is exact in float32)
    floats = {k: v.float() for k, v in state.items() if not k.endswith(INT8_SUFFIXES)}
    model = CRNN(ckpt.model, ckpt.features.n_mels)
    load_weights(model, {**floats, **{n: w.float() for n, w in deq.items()}}, ckpt)
    if not dynamic_int8_available():
        return _half_conv(model) if conv == "fp16" else model  # weight-only int8
    qmodel = _quantize_dynamic(model, conv)
    for name, module in qmodel.named_modules():
        current = _quantized_weights(module)
        if current is None:
            continue
        exact = {
            k: torch._make_per_tensor_quantized_tensor(
                state[f"{name}.{k}.int8"],
                float(state[f"{name}.{k}.scale"]),
                int(state[f"{name}.{k}.zero_point"]),
            )
            for k in current
        }
        if isinstance(module, nn.Module) and hasattr(module, "set_weight_bias"):
            if "weight" in exact:  # Linear
                module.set_weight_bias(exact["weight"], module.bias())
            else:  # GRU: its biases sit beside the weights in one dict
                biases = module.get_bias()
                module.set_weight_bias({**exact, **biases})
    return (_half_conv(qmodel) if conv == "fp16" else qmodel).eval()


def _half_conv(model: nn.Module) -> nn.Module:
    model.conv[0] = HalfPrecision(model.conv[0])
    return model


def to_fp16(ckpt: Checkpoint) -> Checkpoint:
    """Half-precision checkpoint: every weight stored and run in float16."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    return _derived(ckpt, "fp16", state)


def build_fp16(ckpt: Checkpoint) -> nn.Module:
    return load_weights(CRNN(ckpt.model, ckpt.features.n_mels).half(), ckpt.state_dict, ckpt)


def float_equivalent(ckpt: Checkpoint) -> nn.Module:
    """The float32 CRNN with the same shapes, for counting MACs: thop counts quantized modules as
    0, so int8 layers are counted as the float layers they replace."""
    return CRNN(ckpt.model, ckpt.features.n_mels).eval()


def _derived(ckpt: Checkpoint, kind: str, state: dict, **info) -> Checkpoint:
    """A compressed copy: same model, features, keyword and threshold; metrics measured anew;
    provenance kept, with where it came from. A calibration is kept under another name: its
    threshold was measured on the model before compression."""
    kept = {k: v for k, v in ckpt.info.items() if k != "calibration"}
    if "calibration" in ckpt.info:
        kept["calibration_before_compression"] = ckpt.info["calibration"]
    return Checkpoint(
        kind,
        ckpt.model,
        ckpt.features,
        ckpt.keyword,
        state,
        metrics={},
        threshold=ckpt.threshold,
        info={**kept, "source": _source(ckpt), **info},
    )


def _source(ckpt: Checkpoint) -> dict:
    return {
        "path": str(ckpt.path) if ckpt.path else None,
        "kind": ckpt.kind,
        "metrics": ckpt.metrics,
    }


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
    from kwscli.evaluate import compare_compressed

    check_conv_mode(conv)  # before any work
    if tolerance < 0:
        raise ConfigError(f"--tolerance {tolerance}: must be ≥ 0 (0.1 = warn past 10% worse)")
    src = load_checkpoint(path)
    if src.kind == kind:
        return None
    if src.kind not in ("teacher", "student"):
        raise KwsError(
            f"{path} is {src.kind}; {kind} needs the float model it came from "
            f"({src.info.get('source', {}).get('path') or 'its teacher/student .pt'})"
        )
    out = Path(out) if out else Path(path).with_suffix(f".{kind}.pt")
    check_output(out, force)
    converted = to_int8(src, conv) if kind == "int8" else to_fp16(src)
    report = compare_compressed(src, converted, out, data, tolerance=tolerance)
    if report.au_fa_fr_after is not None:
        converted.metrics = {
            "val_au_fa_fr": report.au_fa_fr_after,
            "source_val_au_fa_fr": report.au_fa_fr_before,
        }
    save_checkpoint(converted, out)
    return report
