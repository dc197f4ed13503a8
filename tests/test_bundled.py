"""The shipped models work anywhere: copied out of the package, used by name, on a machine
without the dataset they were trained on."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from kwscli.bundled import BUNDLED
from kwscli.checkpoint import load_checkpoint, resolve_model
from kwscli.cli import app

runner = CliRunner()


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A fresh folder as the working directory: no data/, no runs/."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_bundled_names_resolve_unless_a_file_of_that_name_exists(elsewhere):
    assert resolve_model("teacher") == BUNDLED / "teacher.pt"
    assert load_checkpoint("student").kind in ("student", "fp16", "int8")
    (elsewhere / "teacher").write_text("mine")
    assert resolve_model("teacher") == Path("teacher")  # the user's file wins


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fp16", "quantize"])
def test_compressing_a_copied_bundled_teacher_works_without_its_dataset(elsewhere, command):
    shutil.copy(BUNDLED / "teacher.pt", elsewhere / "model.pt")
    res = runner.invoke(app, [command, "model.pt"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "data/synth-3) is not on this machine: pass --data DIR" in " ".join(res.output.split())
    suffix = "fp16" if command == "fp16" else "int8"
    assert load_checkpoint(elsewhere / f"model.{suffix}.pt").kind == suffix


def test_evaluating_a_bundled_model_without_its_dataset_says_pass_data(elsewhere):
    res = runner.invoke(app, ["evaluate", "student", "--no-latency"])
    assert res.exit_code == 1
    assert "is not on this machine; pass --data DIR" in " ".join(res.output.split())


@pytest.mark.slow
def test_distilling_the_bundled_teacher_by_name(elsewhere):
    res = runner.invoke(app, ["distill", "--teacher", "teacher", "--print-config"])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["distill"]["teacher"] == "teacher" and cfg["data"]["path"] == "data/synth-3"
    res = runner.invoke(app, ["distill", "--teacher", "teacher", "--epochs", "1"])
    assert res.exit_code == 1 and "pass --data DIR" in res.output
    assert not (elsewhere / "runs").exists() or not any((elsewhere / "runs").rglob("*.pt"))


def test_distill_without_a_trained_teacher_says_how_to_get_one(elsewhere):
    res = runner.invoke(app, ["distill", "--loss", "kl", "--temperature", "4"])
    assert res.exit_code == 1
    assert "no teacher trained yet: run `kws teacher` first" in " ".join(res.output.split())


def test_detect_with_a_bundled_model_by_name(elsewhere):
    rng = np.random.default_rng(0)
    sf.write(elsewhere / "a.wav", (0.01 * rng.standard_normal(32000)).astype(np.float32), 16000)
    res = runner.invoke(app, ["detect", "a.wav", "--model", "teacher", "--json"])
    assert res.exit_code == 0, res.output
    assert "teacher.pt" in res.output
