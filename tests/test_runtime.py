"""The torch-free runtime (kwscli/runtime.py): an exported .onnx model gives `kws detect`'s
probabilities and detections, and runs with torch absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwscli.bundled import BUNDLED
from kwscli.cli import app
from tests.conftest import WITHOUT_TORCH

pytestmark = pytest.mark.slow  # exports two models (~5 s) and runs subprocesses
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
EXAMPLE = Path(__file__).parents[1] / "examples" / "sheila_example.wav"
runner = CliRunner()


def streams(name: str, onnx_path: Path, state: str = "window"):
    """(times, probs, focus) of the torch detector and of the runtime on the example, the runtime
    fed in 77 uneven chunks."""
    import kwscli
    from kwscli.runtime import OnnxDetector

    audio, _ = sf.read(EXAMPLE, dtype="float32")
    runtime = OnnxDetector(onnx_path)
    outs = [runtime.process(c) for c in np.array_split(audio, 77)] + [runtime.flush()]
    torch_det = kwscli.load(name, state=state).detector
    torch_det.reset()
    ref = [torch_det.process(audio), torch_det.flush()]
    return tuple(
        (
            np.concatenate([getattr(o, k) for o in outs]),
            np.concatenate([getattr(o, k) for o in ref]),
        )
        for k in ("times", "probs", "focus")
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    for name in ("teacher", "student"):
        for state in ("window", "carry"):
            out = folder / (f"{name}.onnx" if state == "window" else f"{name}.carry.onnx")
            res = runner.invoke(
                app, ["export", name, "--format", "onnx", "--state", state, "--out", str(out)]
            )
            assert res.exit_code == 0, res.output
    return folder


def test_a_float_model_gives_the_torch_detectors_numbers(exported):
    (t, t_ref), (p, p_ref), (f, f_ref) = streams("teacher", exported / "teacher.onnx")
    assert len(t) == len(t_ref) > 400
    np.testing.assert_array_equal(t, t_ref)
    np.testing.assert_allclose(p, p_ref, atol=1e-4)
    np.testing.assert_allclose(f, f_ref, atol=1e-3)


def test_the_fp16_student_gives_the_same_detections(exported):
    """Torch and the runtime both run the fp16 student in float32 from its fp16 weights: P within
    1e-4, the detections the same."""
    (t, t_ref), (p, p_ref), _ = streams("student", exported / "student.onnx")
    np.testing.assert_array_equal(t, t_ref)
    np.testing.assert_allclose(p, p_ref, atol=1e-4)
    cli = [json.loads(runner.invoke(app, ["detect", str(EXAMPLE), "--json", *m]).output)[0]
           for m in ([], ["--model", str(exported / "student.onnx")])]  # fmt: skip
    torch_dets, onnx_dets = (c["detections"] for c in cli)
    assert len(onnx_dets) == len(torch_dets) >= 3
    for a, b in zip(onnx_dets, torch_dets, strict=True):
        assert (a["start"], a["end"]) == (b["start"], b["end"])
        assert abs(a["time"] - b["time"]) < 0.02 and abs(a["peak"] - b["peak"]) < 1e-4


@pytest.mark.parametrize("name", ["student.onnx", "student.carry.onnx"])
def test_the_bundled_onnx_is_the_bundled_student_exported(exported, name):
    from kwscli.runtime import OnnxDetector

    shipped, fresh = OnnxDetector(BUNDLED / name), OnnxDetector(exported / name)
    assert shipped.meta["threshold"] == fresh.meta["threshold"]
    assert shipped.state == fresh.state == ("carry" if "carry" in name else "window")
    audio = np.random.default_rng(0).standard_normal(32_000).astype(np.float32) * 0.1
    np.testing.assert_allclose(shipped.process(audio).probs, fresh.process(audio).probs, atol=1e-6)


@pytest.mark.parametrize(("state", "keywords"), [("window", 3), ("carry", 4)])
def test_detect_runs_with_torch_absent(state, keywords):
    """torch and torchaudio made unimportable: `kws detect` falls back to the bundled ONNX
    student of that state mode, finds the example's keywords, and never imports torch."""
    code = (
        WITHOUT_TORCH
        + """
import sys, json, io, contextlib
from kwscli.cli import app
from typer.testing import CliRunner
res = CliRunner().invoke(app, ["detect", sys.argv[1], "--json", "--state", sys.argv[2]])
assert res.exit_code == 0, res.output
out = json.loads(res.output)[0]
assert "torch" not in sys.modules
print(len(out["detections"]), out["settings"]["kind"])
"""
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE), state],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    found, kind = res.stdout.split(maxsplit=1)
    assert int(found) == keywords and "onnx" in kind


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "nope.onnx", "model not found"),
        (lambda d: _write(d / "junk.onnx", b"not onnx"), "not a readable ONNX model"),
        (lambda d: _foreign_onnx(d / "other.onnx"), "not an ONNX model this kws reads"),
        (lambda d: _damaged(d, geometry='{"kernel": 12, "stride": 0, "window": 18}'), "≥ 1"),
        (lambda d: _damaged(d, geometry='{"kernel": 12, "stride": 5, "window": -3}'), "≥ 1"),
        (lambda d: _damaged(d, threshold=None), "damaged kws ONNX metadata ('threshold')"),
        (lambda d: _damaged(d, threshold="abc"), "damaged kws ONNX metadata"),
        (lambda d: _damaged(d, keyword=None), "damaged kws ONNX metadata ('keyword')"),
        (lambda d: _damaged(d, features='{"sample_rate": 16000}'), "damaged kws ONNX metadata"),
    ],
)
def test_bad_onnx_models_are_one_line(tmp_path, make, needle):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)
    res = runner.invoke(app, ["detect", str(wav), "--model", str(make(tmp_path))])
    assert res.exit_code == 1 and needle in res.output and "Traceback" not in res.output


def test_window_files_of_the_graph_before_still_run(exported, tmp_path, monkeypatch):
    """A window-mode file exported before the conv ran once per step (input `logmel`: windows of
    frames, the conv run on each) gives the torch detector's numbers, and a file of today's graph
    gives its steps, fed in pieces shorter than a conv step after a reset."""
    from kwscli import export
    from kwscli.runtime import OnnxDetector

    monkeypatch.setattr(export, "window_graph", _frame_windows_graph)
    old = tmp_path / "teacher.logmel.onnx"
    res = runner.invoke(app, ["export", "teacher", "--format", "onnx", "--out", str(old)])
    assert res.exit_code == 0, res.output
    detector = OnnxDetector(old)
    assert [i.name for i in detector.session.get_inputs()] == ["logmel"]
    (t, t_ref), (p, p_ref), (f, f_ref) = streams("teacher", old)
    assert len(t) == len(t_ref) > 400
    np.testing.assert_array_equal(t, t_ref)
    np.testing.assert_allclose(p, p_ref, atol=1e-4)
    np.testing.assert_allclose(f, f_ref, atol=1e-3)

    audio, _ = sf.read(EXAMPLE, dtype="float32")
    new = OnnxDetector(exported / "teacher.onnx")
    assert [i.name for i in new.session.get_inputs()] == ["frames"]
    new.process(audio[:50_000])  # a stream left halfway, then a new one
    new.reset()
    outs = [new.process(c) for c in np.array_split(audio, 1500)] + [new.flush()]  # 480 samples
    detector.reset()
    ref = [detector.process(audio), detector.flush()]
    for key in ("times", "probs", "focus"):
        got, expected = (np.concatenate([getattr(o, key) for o in r]) for r in (outs, ref))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_carry_mode_gives_the_torch_detectors_numbers(exported):
    """`kws export --format onnx --state carry`: the GRU state carried across calls in the
    runtime, step for step what `kws detect --state carry` computes (float teacher: 1e-4)."""
    (t, t_ref), (p, p_ref), (f, f_ref) = streams(
        "teacher", exported / "teacher.carry.onnx", "carry"
    )
    assert len(t) == len(t_ref) > 400
    np.testing.assert_array_equal(t, t_ref)
    np.testing.assert_allclose(p, p_ref, atol=1e-4)
    np.testing.assert_allclose(f, f_ref, atol=1e-3)


def test_carry_mode_fp16_student_finds_what_torch_finds(exported):
    """The bundled student in carry mode: its carry threshold travels in the file, and the
    detections on the example are torch's (all four keywords)."""
    cli = [
        json.loads(runner.invoke(app, ["detect", str(EXAMPLE), "--json", *m]).output)[0]
        for m in (["--state", "carry"], ["--model", str(exported / "student.carry.onnx")])
    ]
    torch_run, onnx_run = cli
    assert onnx_run["settings"]["state"] == "carry"
    assert onnx_run["settings"]["threshold"] == torch_run["settings"]["threshold"]
    assert len(onnx_run["detections"]) == len(torch_run["detections"]) == 4
    for a, b in zip(onnx_run["detections"], torch_run["detections"], strict=True):
        assert (a["start"], a["end"]) == (b["start"], b["end"])
        assert abs(a["time"] - b["time"]) < 0.02 and abs(a["peak"] - b["peak"]) < 5e-3


def test_a_file_runs_the_mode_it_was_exported_for(exported):
    res = runner.invoke(
        app, ["detect", str(EXAMPLE), "--model", str(exported / "teacher.onnx"), "--state", "carry"]
    )
    assert res.exit_code == 2 and "was exported for --state window" in res.output
    assert "--state carry" in res.output  # how to get the other mode
    res = runner.invoke(app, ["export", "teacher", "--state", "carry"])  # TorchScript: window
    assert res.exit_code == 2 and "--format onnx" in res.output


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _damaged(folder: Path, **changes) -> Path:
    """The bundled student.onnx with metadata entries replaced (None: removed)."""
    import onnx

    model = onnx.load(str(BUNDLED / "student.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        meta.pop(key) if value is None else meta.__setitem__(key, value)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, str(folder / "damaged.onnx"))
    return folder / "damaged.onnx"


def _foreign_onnx(path: Path) -> Path:
    """A valid ONNX graph of another tool (no kws metadata)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _frame_windows_graph(ckpt):
    """kwscli/onnx_graphs.py's `window_graph` as it was: windows of frames (B, n_mels,
    window_frames) in, the conv run on each, P(keyword) (B,) and attention (B, window) out."""
    import torch

    from kwscli.inference import build_model
    from kwscli.models.crnn import keyword_probability
    from kwscli.onnx_graphs import int8_window_model
    from kwscli.shapes import StreamGeometry

    class FrameWindows(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            model = int8_window_model(ckpt).model if ckpt.kind == "int8" else build_model(ckpt)
            self.model = model.float().requires_grad_(False)

        def forward(self, logmel):
            logits, weights, _ = self.model.outputs(logmel)
            return keyword_probability(logits), weights

    g = StreamGeometry.of(ckpt.model, ckpt.features)
    example = (torch.zeros(1, ckpt.features.n_mels, g.window_frames),)
    names = {"input_names": ["logmel"], "output_names": ["p_keyword", "attention"],
             "dynamic_axes": {"logmel": {0: "windows"}, "p_keyword": {0: "windows"},
                              "attention": {0: "windows"}}}  # fmt: skip
    return FrameWindows().eval(), example, names
