"""The Python API (`kwscli.load` → Spotter): the same detections as `kws detect`, from a file, a
numpy array at any rate, or a stream of chunks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import kwscli
from kwscli.audio import resample
from kwscli.bundled import BUNDLED
from kwscli.checkpoint import load_checkpoint, save_checkpoint
from kwscli.cli import app
from kwscli.errors import CheckpointError, ConfigError

EXAMPLE = Path(__file__).parents[1] / "examples" / "sheila_example.wav"


def test_import_kwscli_does_not_import_torch():
    code = "import sys, kwscli; assert kwscli.__version__; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_detect_a_file_equals_the_cli():
    spotter = kwscli.load()
    res = CliRunner().invoke(app, ["detect", str(EXAMPLE), "--json"])
    cli = json.loads(res.output)[0]
    ours = [d.to_dict() for d in spotter.detect(EXAMPLE)]
    assert ours == cli["detections"] and len(ours) >= 2
    assert cli["settings"]["threshold"] == spotter.threshold


def test_a_numpy_array_at_another_rate_finds_the_same_keywords():
    spotter = kwscli.load()
    audio, sr = sf.read(EXAMPLE, dtype="float32")
    from_file = spotter.detect(EXAMPLE)
    assert [d.to_dict() for d in spotter.detect(audio, sr)] == [d.to_dict() for d in from_file]
    at_48k = resample(audio, sr, 48_000)
    moved = spotter.detect(np.stack([at_48k, at_48k], axis=1), 48_000)  # stereo, 48 kHz
    assert len(moved) == len(from_file)
    for a, b in zip(moved, from_file, strict=True):
        assert abs(a.time - b.time) < 0.1


@pytest.mark.parametrize("model", ["teacher", "student"])
def test_streaming_chunks_equal_scoring_the_whole_array(model):
    """Float rounding only: the fp16 student streams in float32 too (its half-precision
    arithmetic, with per-batch rounding, differed by ~3e-3)."""
    spotter = kwscli.load(model)
    audio, _ = sf.read(EXAMPLE, dtype="float32")
    chunked = np.concatenate([spotter.predict(c) for c in np.array_split(audio, 333)])
    _, whole = spotter.scores(audio)
    assert len(chunked) > 100
    np.testing.assert_allclose(chunked, whole[: len(chunked)], atol=1e-5)
    spotter.reset()
    assert len(spotter.predict(audio[:100])) == 0  # shorter than a step: nothing yet


def test_settings_are_checked_and_a_lying_threshold_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        kwscli.load(state="sideways")
    with pytest.raises(ConfigError):
        kwscli.load(threshold=1.5)
    assert kwscli.load(threshold=0.7).threshold == 0.7
    ckpt = load_checkpoint(BUNDLED / "teacher.pt")
    ckpt.threshold, ckpt.provenance.calibration = 5.0, None
    save_checkpoint(ckpt, tmp_path / "liar.pt")
    with pytest.raises(CheckpointError, match="not a probability"):
        kwscli.load(str(tmp_path / "liar.pt"))


def test_an_exported_model_loads_on_the_runtime_with_the_same_api():
    """`kwscli.load("M.onnx")` is the torch-free spotter: the torch spotter's detections on a file
    and on an array (start and end equal, peak within 1e-4), and the same live chunks."""
    pytest.importorskip("onnxruntime")
    from kwscli.runtime import OnnxSpotter

    onnx, torch_spotter = kwscli.load(BUNDLED / "student.onnx"), kwscli.load()
    assert isinstance(onnx, OnnxSpotter) and not isinstance(torch_spotter, OnnxSpotter)
    assert (onnx.keyword, onnx.sample_rate, onnx.step_seconds) == (
        torch_spotter.keyword,
        torch_spotter.sample_rate,
        torch_spotter.step_seconds,
    )
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    for source in (EXAMPLE, audio):
        got, ref = onnx.detect(source, rate), torch_spotter.detect(source, rate)
        assert len(got) == len(ref) >= 3
        for a, b in zip(got, ref, strict=True):
            assert (a.start, a.end) == (b.start, b.end) and abs(a.peak - b.peak) < 1e-4
    onnx.reset(), torch_spotter.reset()
    chunks = [audio[i : i + 4000] for i in range(0, len(audio), 4000)]
    p = np.concatenate([onnx.predict(c) for c in chunks])
    p_ref = np.concatenate([torch_spotter.predict(c) for c in chunks])
    np.testing.assert_allclose(p, p_ref, atol=1e-4)


def test_load_without_torch_gives_the_bundled_students_onnx_copy():
    pytest.importorskip("onnxruntime")
    from tests.conftest import WITHOUT_TORCH

    code = WITHOUT_TORCH + (
        "import kwscli\n"
        "for spotter in (kwscli.load(), kwscli.load('student')):\n"
        f"    found = spotter.detect({str(EXAMPLE)!r})\n"
        "    assert type(spotter).__name__ == 'OnnxSpotter' and len(found) >= 3, found\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
