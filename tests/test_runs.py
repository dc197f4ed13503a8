"""`kws runs`: every run listed with its cost and its ratios to the teacher."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.config import ModelConfig
from kwscli.metrics import count_macs, size_bytes
from kwscli.models.crnn import CRNN

runner = CliRunner()


def test_runs_lists_teacher_and_student_with_ratios(trained_teacher, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained_teacher.parent, runs / "teacher")
    (runs / "junk").mkdir()
    (runs / "junk" / "model.pt").write_bytes(b"not ours")  # ignored, not fatal
    res = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(runs / "teacher" / "model.pt"),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--hidden-size",
            "6",
            "--runs-dir",
            str(runs),
            "--name",
            "s",
            "--no-augment",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["runs", str(runs), "--json", "--sort", "params"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert [r["name"] for r in listed] == ["s", "teacher"]  # sorted by params, small first
    student, teacher = listed
    s_model = CRNN(
        ModelConfig(cnn_out_channels=3, kernel_size=(7, 20), stride=(7, 12), hidden_size=6), 40
    )
    t_model = CRNN(ModelConfig(hidden_size=16), 40)
    assert student["bytes"] == size_bytes(s_model)
    assert student["macs_2s"] == count_macs(s_model, 40, 201)
    assert student["memory_ratio"] == size_bytes(t_model) / size_bytes(s_model)
    assert student["macs_ratio"] == count_macs(t_model, 40, 201) / count_macs(s_model, 40, 201)
    assert student["au_fa_fr_ratio"] == student["au_fa_fr"] / teacher["au_fa_fr"]
    assert student["loss"] == "kl" and student["temperature"] == 4.0
    assert teacher["memory_ratio"] is None
    assert (student["augment"], teacher["augment"]) == (False, True)

    table = runner.invoke(app, ["runs", str(runs)])
    assert table.exit_code == 0 and "student" in table.output and "teacher" in table.output


def test_runs_bad_inputs(tmp_path):
    res = runner.invoke(app, ["runs", str(tmp_path / "none")])
    assert res.exit_code == 1 and "no such folder of runs" in res.output
    res = runner.invoke(app, ["runs", str(tmp_path), "--sort", "speed"])
    assert res.exit_code == 2 and "--sort 'speed'" in res.output
