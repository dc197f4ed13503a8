"""A tiny stand-in Piper voice for tests: a real ONNX file with Piper's interface (phoneme ids,
lengths and scales in; audio out; a RandomNormalLike noise term like VITS's), built with onnx's
helpers. It speaks buzzes, not words, but it runs through piper-tts and onnxruntime exactly as a
downloaded voice does."""

from __future__ import annotations

import json
from pathlib import Path

PHONEMES = "^$_ ,.!?ˈˌːabdefhijklmnoprstuvwzæðŋɐɑɔəɛɜɪɹɾʃʊʌʒθᵻ"


def make_piper_voice(folder: Path, num_speakers: int = 1) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["input"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Tile", ["ids_f", "repeats"], ["long"]),
        helper.make_node("Mul", ["long", "freq"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Gather", ["scales", "zero"], ["noise_scale"], axis=0),
        helper.make_node("RandomNormalLike", ["tone"], ["noise"]),
        helper.make_node("Mul", ["noise", "noise_scale"], ["noise_scaled"]),
        helper.make_node("Add", ["tone", "noise_scaled"], ["wave"]),
        helper.make_node("Unsqueeze", ["wave", "axis1"], ["output"]),
    ]
    inits = [
        helper.make_tensor("repeats", TensorProto.INT64, [2], [1, 256]),
        helper.make_tensor("freq", TensorProto.FLOAT, [], [0.37]),
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "L"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    if num_speakers > 1:
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    out = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "N"])]
    graph = helper.make_graph(nodes, "tiny_piper", inputs, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-voice.onnx"
    onnx.save(model, path)
    config = {
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "num_symbols": 256,
        "num_speakers": num_speakers,
        "phoneme_id_map": {c: [i + 1] for i, c in enumerate(PHONEMES)},
    }
    Path(f"{path}.json").write_text(json.dumps(config, ensure_ascii=False))
    assert np  # numpy is onnx's dependency; imported to fail early if missing
    return path
