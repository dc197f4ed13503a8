"""What a new user tripped on (issue: tables that cut numbers, `--far 0.01 0.05`, a keyword of
two words, a calibration too short for its budget, shell completion, Python types in --help, the
example recording outside a clone, -q, a missing extra, a pipe closed early)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

    from kwscli.plots import _model_label

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

    from kwscli.plots import plot_history

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


def _all_commands():
    import typer.main

    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        if hasattr(command, "commands"):
            yield from ([name, sub] for sub in command.commands)
        else:
            yield [name]


@pytest.mark.parametrize("command", [None, *_all_commands()], ids=lambda c: " ".join(c or ["kws"]))
def test_help_shows_words_not_python_types(command):
    """Every --help, at 100 columns: values read PATH, TEXT, X, N or the choices, never
    Typer's <bool>, <str>, <path>, <list[Path]>."""
    res = runner.invoke(app, [*(command or []), "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    for python_type in ("<bool>", "<str>", "<path>", "<float>", "<int>", "<list["):
        assert python_type not in res.output


def _keyword_times() -> list[float]:
    from kwscli.bundled import bundled_example

    key = json.loads(bundled_example().with_suffix(".json").read_text())
    return [(k["start"] + k["end"]) / 2 for k in key["keyword_times"]]


def test_the_example_recording_ships_with_the_package():
    """`kws detect --example` needs no clone: the recording and its answer key are package data."""
    import kwscli
    from kwscli.bundled import bundled_example

    assert bundled_example().is_file()
    assert bundled_example().parent.is_relative_to(Path(kwscli.__file__).parent)
    assert len(_keyword_times()) == 4


@pytest.mark.slow
def test_detect_example_finds_the_keywords_of_the_shipped_recording():
    res = runner.invoke(app, ["detect", "--example", "--json", "--state", "carry"])
    assert res.exit_code == 0, res.output
    found = [d["time"] for d in json.loads(res.stdout)[0]["detections"]]
    said = _keyword_times()
    assert all(any(abs(f - s) < 1.0 for f in found) for s in said), (found, said)


def test_detect_without_inputs_points_at_the_example():
    res = runner.invoke(app, ["detect"])
    assert res.exit_code == 2
    assert "--example" in res.output


@pytest.mark.slow
def test_quiet_keeps_the_results_and_drops_the_notes(tmp_path):
    loud = runner.invoke(app, ["detect", "--example", "--plot", str(tmp_path / "a.png")])
    quiet = runner.invoke(app, ["-q", "detect", "--example", "--plot", str(tmp_path / "b.png")])
    assert loud.exit_code == quiet.exit_code == 0, quiet.output
    assert "plot →" in loud.output and "plot →" not in quiet.output
    assert (tmp_path / "b.png").is_file()  # the work is the same
    table = [line for line in loud.stdout.splitlines() if "0:" in line]
    assert table and all(line in quiet.stdout for line in table)


def test_quiet_silences_the_training_epoch_lines():
    from types import SimpleNamespace

    from kwscli.report import TrainingProgress, set_quiet

    record = SimpleNamespace(
        best=True, epoch=1, train_loss=0.5, val_loss=0.4, val_au_fa_fr=1e-3, val_accuracy=0.9,
        seconds=1.0, select_au_fa_fr=None,
    )  # fmt: skip
    for quiet in (False, True):
        console = Console(record=True, force_terminal=False)
        set_quiet(quiet)
        try:
            with TrainingProgress(console) as progress:
                progress.on_start(1, 1, 1)
                progress.on_epoch_end(record)
        finally:
            set_quiet(False)
        assert ("epoch   1/1" in console.export_text()) is not quiet


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("matplotlib", ["detect", "--example", "--plot", "{tmp}/p.png"], "plot"),
        ("matplotlib", ["evaluate", "student", "--plot", "{tmp}/p.png"], "plot"),
        ("espeakng_loader", ["data", "synth", "--out", "{tmp}/synth", "--clips", "20"], "synth"),
        ("espeakng_loader", ["demo", "--fast", "--out", "{tmp}/demo"], "synth"),
        ("matplotlib", ["demo", "--fast", "--out", "{tmp}/demo"], "plot"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_before_any_work(
    tmp_path, monkeypatch, module, args, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # what an install without the extra imports
    res = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert f'pip install "kws[{extra}]"' in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing half-written


@pytest.mark.slow
def test_a_reader_that_stops_early_is_not_an_error():
    """`kws detect ... | head -1`: the closed pipe ends kws quietly, exit 0, no traceback."""
    kws = Path(sys.executable).parent / "kws"
    out = subprocess.run(
        ["bash", "-c", f"{kws} detect --example | head -c 20 >/dev/null; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "0", out
    assert "error" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_tradeoff_labels_of_models_at_the_same_cost_never_overlap():
    """Three students of one shape (same MACs, close au_fa_fr): each name on its own line,
    all inside the axis."""
    from kwscli.plots import _label_points, _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots()
    top = _label_points(ax, [(2e5, 5.6e-4, "a"), (2e5, 5.7e-4, "b"), (2e5, 5.0e-4, "c")], 8e-4)
    heights = sorted(text.xyann[1] for text in ax.texts)
    plt.close(fig)
    assert len(heights) == 3 and heights[0] == 5.0e-4  # the lowest stays at its point
    assert all(b - a >= 8e-4 * 0.055 - 1e-12 for a, b in zip(heights, heights[1:], strict=False))
    assert top >= heights[-1]
