"""What a new user tripped on (issue: tables that cut numbers, `--far 0.01 0.05`, a keyword of
two words, a calibration too short for its budget, shell completion)."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.runs import RunSummary

runner = CliRunner()


def summary(name: str, au: float) -> RunSummary:
    return RunSummary(
        name=name, path=f"runs/{name}/model.pt", kind="student", loss="kl+attention+similarity",
        temperature=4.0, alpha=1.0, attention_weight=1.0, augment=False, params=2_162,
        bytes=12_991, macs_2s=123_266, au_fa_fr=au, epoch=13, created="", memory_ratio=22.1,
        macs_ratio=15.84, au_fa_fr_ratio=0.94,
    )  # fmt: skip


@pytest.mark.parametrize("width", [80, 100, 160])
def test_tables_never_cut_a_number_or_a_name(width):
    from kwscli.report import runs_table

    runs = [summary("student-kl-T4-att1-with-a-long-name", 6.925123e-4), summary("t", 2.5e-3)]
    console = Console(width=width, record=True)
    console.print(runs_table(runs, "runs", width=width))
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for number in ("6.925e-04", "2.500e-03"):
        assert number in text  # the metric is always there, whole
    first_cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if "│" in line)
    assert "student-kl-T4-att1-with-a-long-name" in first_cells  # wrapped, never cut
    if width < 160:
        assert "left out at this width" in text


def test_far_values_after_one_flag_say_to_repeat_it():
    res = runner.invoke(app, ["evaluate", "teacher", "--far", "0.01", "0.05"])
    assert res.exit_code == 2
    assert "give each rate its own flag (--far 0.01 --far 0.05)" in " ".join(res.output.split())


def test_a_keyword_of_two_words_reads_its_underscored_folder(tmp_path):
    from kwscli.data.speech_commands import scan_dataset
    from tests.conftest import make_dataset

    root = make_dataset(tmp_path / "ds", {"hey_jarvis": 10, "yes": 10}, keyword="hey_jarvis")
    index = scan_dataset(root, "hey jarvis", "random")
    assert int(index.labels.sum()) == 10


def test_a_calibration_too_short_for_its_budget_says_so():
    from kwscli.calibrate import Calibration

    four_minutes = Calibration(
        model="m", output="o", target_fa_per_hour=0.5, threshold=0.9, fa_per_hour=0.0,
        false_alarms=0, hours=4 / 60, files=1, skipped=[], frr=None, positives=0, state="window",
    )  # fmt: skip
    assert "needs at least 2 h" in four_minutes.too_short
    assert "0 false alarms from 15 per hour" in four_minutes.too_short
    two_hours = Calibration(**{**four_minutes.__dict__, "hours": 2.0})
    assert two_hours.too_short is None


def test_shell_completion_is_offered():
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.output


def test_plot_labels_tell_models_apart():
    from types import SimpleNamespace

    from kwscli.report import _model_label

    reports = [SimpleNamespace(path=p, label=k) for p, k in (
        ("runs/a/model.pt", "student"), ("runs/a/model.fp16.pt", "fp16"),
        ("runs/b/model.pt", "teacher"))]  # fmt: skip
    labels = [_model_label(r) for r in reports]
    assert len(set(labels)) == 3 and labels[0] == "a/model.pt (student)"


def test_training_curves_put_each_loss_on_its_own_axis_and_mark_the_best_epoch(tmp_path):
    import json

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from kwscli.report import plot_history

    hist = [{"epoch": e, "train_loss": 0.002 / e, "val_loss": 0.65 - 0.01 * e,
             "val_au_fa_fr": [3e-3, 1e-3, 2e-3][e - 1]} for e in (1, 2, 3)]  # fmt: skip
    (tmp_path / "h.json").write_text(json.dumps(hist))
    saved = []
    original = plt.Figure.savefig
    plt.Figure.savefig = lambda self, *a, **k: (saved.append(self), original(self, *a, **k))[1]
    try:
        plot_history(tmp_path / "h.json", tmp_path / "c.png")
    finally:
        plt.Figure.savefig = original
    (fig,) = saved
    assert len(fig.axes) == 3  # train loss, its twin (val CE), au_fa_fr
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "best: epoch 2" in texts
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
