"""Nothing lost, nothing run that should not be: interruption, kills, locks, hostile files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kwscli.checkpoint import load_checkpoint
from kwscli.cli import app
from kwscli.errors import KwsError

runner = CliRunner()


# one thread: tiny models gain nothing from more, and it keeps runs quick on a busy machine
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _teacher_cmd(data: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kwscli",
        "teacher",
        "--data",
        str(data),
        "--runs-dir",
        str(runs),
        "--name",
        name,
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--hidden-size",
        "8",
        "--epoch-size",
        "3200",
        "--seed",
        "3",
        *extra,
    ]


def _wait_for(predicate, proc, timeout=120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before the fault could be injected: {proc.communicate()}")
        time.sleep(0.01)
    pytest.fail("timed out waiting for the run")


def _epochs(run: Path) -> int:
    try:
        return len(json.loads((run / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def _metrics(run: Path) -> list[tuple]:
    return [
        (h["epoch"], h["train_loss"], h["val_loss"], h["val_au_fa_fr"])
        for h in json.loads((run / "history.json").read_text())
    ]


@pytest.mark.slow
def test_ctrl_c_then_resume_ends_like_an_uninterrupted_run(tiny_dataset, tmp_path):
    env = ENV
    whole = subprocess.run(
        _teacher_cmd(tiny_dataset, tmp_path, "whole"), env=env, capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr

    proc = subprocess.Popen(
        _teacher_cmd(tiny_dataset, tmp_path, "cut"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: _epochs(tmp_path / "cut") >= 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted during epoch" in err and "--resume" in err and "Traceback" not in err
    assert _epochs(tmp_path / "cut") < 3  # it really stopped early
    load_checkpoint(tmp_path / "cut" / "model.pt")  # what was saved is whole

    resumed = subprocess.run(
        _teacher_cmd(tiny_dataset, tmp_path, "cut", "--resume"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    a = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


KILL_POINTS = {
    "at start": lambda run: True,
    "first best checkpoint appears": lambda run: (run / "model.pt").exists(),
    "first resumable state appears": lambda run: (run / "last.pt").exists(),
    "mid epoch 2": lambda run: _epochs(run) >= 1 and (run / "curves.png").exists(),
    "second history write": lambda run: _epochs(run) >= 2,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_any_moment_leaves_only_whole_files(tiny_dataset, tmp_path, point):
    run = tmp_path / "k"
    proc = subprocess.Popen(
        _teacher_cmd(tiny_dataset, tmp_path, "k"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: KILL_POINTS[point](run), proc)
    proc.kill()
    proc.wait()
    for f in run.glob("*") if run.exists() else []:
        if f.name.endswith(".tmp"):  # a write cut short lives under a hidden temp name only
            assert f.name.startswith("."), f
        elif f.name == "model.pt":
            load_checkpoint(f)
        elif f.name == "last.pt":
            assert "epoch" in torch.load(f, weights_only=True)
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".png":
            assert f.read_bytes()[-8:-4] == b"IEND"  # a PNG ends with its IEND chunk
    if (run / "last.pt").exists():  # the killed run resumes, and its leftovers are swept
        res = subprocess.run(
            _teacher_cmd(tiny_dataset, tmp_path, "k", "--resume"),
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr
        assert len(json.loads((run / "history.json").read_text())) == 3
        assert not list(run.glob(".*.tmp"))


def _one_epoch_into(data: Path, runs: Path, name: str):
    """`kws teacher` for one quick epoch into runs/name, in process."""
    args = ["--data", str(data), "--runs-dir", str(runs), "--name", name, "--epochs", "1"]
    return runner.invoke(app, ["teacher", *args, "--hidden-size", "4", "--batch-size", "64"])


def test_second_run_into_the_same_folder_is_refused(tiny_dataset, tmp_path):
    run = tmp_path / "busy"
    run.mkdir()
    (run / ".lock").write_text(str(os.getpid()))  # a live process holds it
    res = _one_epoch_into(tiny_dataset, tmp_path, "busy")
    assert res.exit_code == 1 and "in use by another kws run" in res.output
    assert (run / ".lock").read_text() == str(os.getpid())


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over(tiny_dataset, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "stale"
    run.mkdir()
    (run / ".lock").write_text(str(dead.pid))
    res = _one_epoch_into(tiny_dataset, tmp_path, "stale")
    assert res.exit_code == 0, res.output
    assert not (run / ".lock").exists()


def test_unwritable_runs_location_is_reported_before_work(tiny_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(
        app, ["teacher", "--data", str(tiny_dataset), "--runs-dir", str(blocker), "--epochs", "1"]
    )
    assert res.exit_code == 1 and "cannot write there" in res.output


# ---------------------------------------------------------------- hostile checkpoints


class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": "kws-checkpoint", "kind": "teacher", "payload": _Plant(marker)}, path)
    return path, marker


def test_the_crafted_file_really_would_run_code(evil):
    """Guard for the test below: plain unpickling does create the marker."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "{evil}"],
        ["detect", "{wav}", "--model", "{evil}"],
        ["quantize", "{evil}"],
        ["fp16", "{evil}"],
        ["export", "{evil}"],
        ["calibrate", "{evil}", "--negatives", "{wav}"],
        ["distill", "--teacher", "{evil}"],
        ["evaluate", "{good}", "--baseline", "{evil}"],
    ],
)
def test_crafted_pickle_is_refused_everywhere_and_never_runs(evil, trained_teacher, tmp_path, args):
    import soundfile as sf

    path, marker = evil
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    argv = [a.format(evil=path, wav=wav, good=trained_teacher) for a in args]
    res = runner.invoke(app, argv)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "refused" in res.output, res.output
    assert not marker.exists()


# ---------------------------------------------------------------- property tests


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=2048),
    header=st.sampled_from([b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS"]),
)
@pytest.mark.slow
def test_random_bytes_as_audio_give_only_clear_errors(tmp_path, data, header):
    from kwscli.audio import load_wav
    from kwscli.detections import detect_file
    from kwscli.errors import AudioError

    f = tmp_path / "x.wav"
    f.write_bytes(header + data)
    try:
        audio = load_wav(f)
        assert audio.dtype == np.float32
    except AudioError as exc:
        assert str(f) in str(exc)
    from kwscli.config import FeatureConfig, ModelConfig
    from kwscli.models.crnn import CRNN
    from kwscli.models.streaming import StreamingDetector

    det = StreamingDetector(CRNN(ModelConfig(hidden_size=4), 40), FeatureConfig())
    result = detect_file(f, det, 0.5)  # never raises: an unreadable file is a reported error
    assert result.error is None or str(f) in result.error


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "cnn_out_channels",
                "kernel_size",
                "stride",
                "hidden_size",
                "gru_num_layers",
                "bidirectional",
                "num_classes",
                "dropout",
                "bogus",
            ]
        ),
        st.one_of(
            st.integers(-5, 300),
            st.floats(allow_nan=True),
            st.text(max_size=4),
            st.lists(st.integers(-3, 200), max_size=3),
            st.none(),
            st.booleans(),
        ),
    )
)
def test_random_model_settings_give_only_config_errors(model):
    from kwscli.config import RunConfig, validate

    try:
        cfg = validate(RunConfig, {"model": model})
    except KwsError as exc:
        assert exc.exit_code == 2 and "Traceback" not in str(exc)
        return
    from kwscli.models.crnn import CRNN

    out = CRNN(cfg.model, cfg.features.n_mels)(torch.zeros(1, 40, 101))  # valid ⇒ it runs
    assert out.shape == (1, cfg.model.num_classes)


@pytest.mark.slow
def test_a_write_past_the_file_size_limit_is_one_line_and_keeps_the_old_file(tmp_path):
    """As a full disk would: `kws fp16` under a 50 KB file-size limit says so in one line,
    leaves no temporary file, and an earlier output stays as it was."""
    import shutil
    import subprocess
    import sys

    from kwscli.bundled import BUNDLED

    shutil.copy(BUNDLED / "teacher.pt", tmp_path / "t.pt")
    (tmp_path / "t.fp16.pt").write_text("earlier output")
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)); "
        "from kwscli.cli import main; sys.argv = ['kws', 'fp16', 't.pt', '--force']; main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1, res.stderr
    assert (
        "could not be written (the write stopped part-way: disk full or a file-size" in res.stderr
    )
    assert "the earlier file is unchanged" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "t.fp16.pt").read_text() == "earlier output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.fp16.pt", "t.pt"]
