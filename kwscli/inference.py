"""Checkpoints into runnable models, and models into scores: the one place for both.

`build_model` rebuilds what a checkpoint describes (float, int8 with its exact stored integers,
fp16), `predict_logits` runs any of them on log-mels whatever its dtype or device, and
`probabilities` is the one P(keyword) (softmax in float32). Training, evaluation, compression,
detection and export all come here; this module only reads checkpoints (`checkpoint.py` is pure
I/O) and never converts or saves one (that is `compress.py`).

int8 uses PyTorch's dynamic quantization where the installed torch has it; elsewhere the same
checkpoint runs as a weight-only int8 model (weights dequantized on load).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kwscli.checkpoint import Checkpoint, Int8Info
from kwscli.errors import CheckpointError
from kwscli.models.crnn import (
    CRNN,
    HalfPrecision,
    input_device,
    input_dtype,
    keyword_probability,
)

INT8_SUFFIXES = (".int8", ".scale", ".zero_point")


def build_model(ckpt: Checkpoint):
    """Rebuild the model a checkpoint describes (float, int8 or fp16), weights loaded, eval mode."""
    if ckpt.kind == "int8":
        return build_int8(ckpt)
    if ckpt.kind == "fp16":
        return build_fp16(ckpt)
    return load_weights(CRNN(ckpt.model, ckpt.features.n_mels), ckpt.state_dict, ckpt)


def load_weights(model, state: dict, ckpt: Checkpoint):
    """`model.load_state_dict(state)`, failing with the one line that says what is wrong."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = (lines[1] if len(lines) > 1 else lines[0] if lines else repr(exc))[:200]
        raise CheckpointError(
            f"{ckpt.path}: its {ckpt.kind} weights do not match its model config ({reason})"
        ) from None
    return model.eval()


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


def _quantized_weights(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """{'weight_ih_l0': qtensor, ...} of a dynamic-quantized module, None for other modules."""
    from torch.ao.nn.quantized import dynamic as nnqd

    if isinstance(module, (nnqd.Linear, nnqd.Conv2d)):
        return {"weight": module.weight()}
    if isinstance(module, nnqd.GRU):
        return dict(module.get_weight())
    return None


def build_dequantized(ckpt: Checkpoint) -> CRNN:
    """An int8 checkpoint as a float32 CRNN: each int8 weight times its scale (exactly the values
    the int8 model multiplies by), the rest in float32 (an fp16 conv is exact in float32). It runs
    where torch has no dynamic quantization; the ONNX export quantizes it again."""
    state = ckpt.state_dict
    names = (ckpt.provenance.int8 or Int8Info()).quantized
    try:
        deq = {
            n: (state[n + ".int8"].float() - state[n + ".zero_point"]) * state[n + ".scale"]
            for n in names
        }
    except KeyError as exc:
        raise CheckpointError(f"{ckpt.path}: damaged int8 checkpoint: no {exc.args[0]!r}") from None
    floats = {k: v.float() for k, v in state.items() if not k.endswith(INT8_SUFFIXES)}
    model = CRNN(ckpt.model, ckpt.features.n_mels)
    return load_weights(model, {**floats, **{n: w.float() for n, w in deq.items()}}, ckpt)


def build_int8(ckpt: Checkpoint) -> nn.Module:
    """The int8 model a checkpoint describes, with exactly its stored integers."""
    state = ckpt.state_dict
    conv = (ckpt.provenance.int8 or Int8Info()).conv
    model = build_dequantized(ckpt)
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


def build_fp16(ckpt: Checkpoint) -> nn.Module:
    return load_weights(CRNN(ckpt.model, ckpt.features.n_mels).half(), ckpt.state_dict, ckpt)


def float_equivalent(ckpt: Checkpoint) -> nn.Module:
    """The float32 CRNN with the same shapes, for counting MACs: thop counts quantized modules as
    0, so int8 layers are counted as the float layers they replace."""
    return CRNN(ckpt.model, ckpt.features.n_mels).eval()


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """P(keyword) as float64 numpy, for the metrics."""
    return keyword_probability(logits).double().numpy()


def predict(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> tuple[Any, float]:
    """P(keyword) for each row (numpy float64), and the mean cross-entropy when labels are given."""
    logits = predict_logits(model, features, batch_size)
    probs = probabilities(logits)
    loss = F.cross_entropy(logits, labels, reduction="mean").item() if labels is not None else 0.0
    return probs, loss


def predict_logits(
    model: torch.nn.Module, features: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Logits (N, classes) as float32 on the CPU, whatever the model's dtype or device. The softmax
    is always taken in float32 afterwards, so an fp16 model's probabilities do not saturate."""
    device, dtype = input_device(model), input_dtype(model)
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(features), batch_size):
            out.append(model(features[i : i + batch_size].to(device, dtype)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)
