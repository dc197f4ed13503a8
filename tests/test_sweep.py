"""`kws sweep`: runs named from their settings, validated up front, resumed where they stopped,
the same with parallel workers; the example and benchmark sweep files stay valid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kwscli.checkpoint import load_checkpoint
from kwscli.cli import app
from kwscli.config import STUDENT_DEFAULTS
from kwscli.sweep import load_sweep
from tests.conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# a few tiny epochs: the sweep's machinery is under test, not the models
TRAIN = "{num_epochs: 2, batch_size: 32, epoch_size: 320, learning_rate: 0.003, seed: 0}"


def kws(*args) -> object:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def write_sweep(path: Path, data: Path, runs: str, train: str = TRAIN) -> Path:
    path.write_text(f"base:\n  data: {{path: {data}}}\n  train: {train}\nruns:\n{runs}")
    return path


TEACHER = "  - {stage: teacher, model: {hidden_size: 16}}\n"


def runs_table(out: Path) -> list[dict]:
    """`kws runs OUT --json`, less what differs between two identical runs (path, time)."""
    res = kws("runs", out, "--json", "--sort", "name")
    assert res.exit_code == 0, res.output
    return [{k: v for k, v in r.items() if k not in ("path", "created")} for r in json.loads(
        res.stdout)]  # fmt: skip


def files_of(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


@contextmanager
def cores(n: int):
    """Run on `n` CPU cores (the sweep gives each run cores ÷ workers threads): tiny models train
    fastest on one thread, and a machine shared with other jobs does not thrash."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:n])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------- validated up front


@pytest.mark.parametrize(
    "runs, expected",
    [
        ("  - {stage: teacher, trian: {seed: 1}}\n", "runs[0]: trian: unknown key"),
        (TEACHER + "  - {stage: distill, train: {learning_rate: -1}}\n",
         "runs[1]: train.learning_rate: Input should be greater than 0"),
        ("  - {stage: student}\n", "runs[0]: stage: 'student': expected teacher or distill"),
        ("  - {stage: teacher, grid: {train.seed: [0, -1]}}\n",
         "runs[0] (train.seed=-1): train.seed: Input should be greater than or equal to 0"),
        (TEACHER + "  - {stage: distill, compress: [fp8]}\n", "runs[1]: compress: 'fp8'"),
        (TEACHER + "  - {stage: distill, teacher: nobody}\n",
         "runs[1]: teacher: 'nobody' is no run of this sweep"),
        ("  - {stage: teacher, model: {kernel_size: [5, 200]}}\n",
         "runs[0]: model.kernel_size[1]=200 is larger than the 101 frames"),
    ],
    ids=["bad-key", "bad-value", "unknown-stage", "bad-grid-value", "bad-compress", "no-teacher",
         "bad-shape"],
)  # fmt: skip
def test_a_bad_entry_is_one_error_line_naming_entry_and_key_before_any_work(
    tmp_path, tiny_dataset, runs, expected
):
    sweep = write_sweep(tmp_path / "s.yaml", tiny_dataset, runs)
    before = sorted(tmp_path.rglob("*"))
    res = kws("sweep", sweep, "--out", tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {sweep}: ") and res.output.count("\n") == 1, res.output
    assert expected in res.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even --out


def test_a_folder_holding_a_run_with_other_settings_is_refused_up_front(tmp_path, tiny_dataset):
    sweep = write_sweep(tmp_path / "s.yaml", tiny_dataset, TEACHER)
    run = tmp_path / "out" / "teacher"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"")  # a run was saved here...
    (run / "config.yaml").write_text("train: {seed: 7}\n")  # ...with another seed
    res = kws("sweep", sweep, "--out", tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert f"runs[0]: {run} holds a run with other settings" in res.output
    assert "train.seed" in res.output
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "model.pt"]


def test_runs_are_named_from_their_settings_and_the_same_settings_are_one_run(
    tmp_path, tiny_dataset
):
    runs = TEACHER + (
        "  - {stage: distill, distill: {loss: kl}, compress: [fp16]}\n"
        "  - {stage: distill, distill: {loss: kl}, compress: [int8]}\n"  # the same student
        "  - {stage: distill, grid: {distill.loss: [mse, kl], train.seed: [0, 1]}}\n"
        "  - {stage: distill, name: mine, distill: {loss: ce, temperature: 2}}\n"
    )
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", tiny_dataset, runs), tmp_path / "out")
    assert [(r.name, r.compress, r.teacher) for r in sweep.runs] == [
        ("teacher", [], None),
        ("student-kl-T4", ["fp16", "int8"], "teacher"),
        ("student-mse", [], "teacher"),
        ("student-mse-seed1", [], "teacher"),
        ("student-kl-T4-seed1", [], "teacher"),
        ("mine", [], "teacher"),
    ]
    assert sweep.runs[3].label == "runs[3] (distill.loss=mse, train.seed=1)"
    assert {r.status for r in sweep.runs} == {"new"}
    student = sweep.runs[1].cfg
    assert student.distill.teacher == str(tmp_path / "out" / "teacher" / "model.pt")
    assert student.data.path == str(tiny_dataset.resolve())  # the teacher's, as kws distill does
    assert student.model.hidden_size == STUDENT_DEFAULTS["model"]["hidden_size"]
    again = load_sweep(tmp_path / "s.yaml", tmp_path / "out")
    assert [r.name for r in again.runs] == [r.name for r in sweep.runs]  # deterministic


# ---------------------------------------------------------------- the shipped sweep files


SHIPPED = ["examples/seed_settings.yaml", "examples/best.yaml", "benchmarks/distill.sweep.yaml",
           "benchmarks/compress.sweep.yaml"]  # fmt: skip


@pytest.fixture
def their_data(tmp_path, monkeypatch) -> Path:
    """A working folder holding the (empty) dataset folders the shipped files name."""
    for name in ("synth", "synth-3", "synth-full"):
        (tmp_path / "data" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("file", SHIPPED)
def test_the_shipped_sweep_files_validate(their_data, file):
    res = kws("sweep", ROOT / file, "--out", "out", "--check")
    assert res.exit_code == 0, res.output
    assert "new" in res.output and not (their_data / "out").exists()


def test_seed_settings_are_the_nine_settings_on_the_final_student_shape(their_data):
    sweep = load_sweep(ROOT / "examples/seed_settings.yaml", "out")
    teacher, *students = sweep.runs
    models = {s.name: s.compress for s in students}
    assert models == {
        "student-mse": ["fp16"],
        "student-ce-T4": [],
        "student-kl-T4": ["fp16", "int8"],
        "student-kl-T4-a0.5": [],
        "student-kl-T4-amp": [],
        "student-kl-T4-att1": [],
    }
    assert sum(1 + len(c) for c in models.values()) == 9
    for s in students:  # SPEC §1: conv 3x(7,20)/(7,12), GRU 30x2; 40 epochs at lr 3e-3
        m = s.cfg.model
        assert (m.cnn_out_channels, m.kernel_size, m.stride, m.hidden_size, m.gru_num_layers) == (
            3, (7, 20), (7, 12), 30, 2)  # fmt: skip
        assert (s.cfg.train.num_epochs, s.cfg.train.learning_rate) == (40, 3e-3)


def test_best_yaml_is_the_recipe_of_the_bundled_student(their_data):
    teacher, student = load_sweep(ROOT / "examples/best.yaml", "out").runs
    bundled = load_checkpoint(ROOT / "kwscli/assets/student.pt")
    bundled_teacher = load_checkpoint(ROOT / "kwscli/assets/teacher.pt")
    assert student.cfg.model == bundled.model and student.cfg.train == bundled.provenance.train
    assert student.cfg.distill.model_dump(exclude={"teacher"}) == (
        bundled.provenance.distill.model_dump(exclude={"teacher"})
    )
    assert student.compress == ["fp16"] and bundled.kind == "fp16"
    assert teacher.cfg.model == bundled_teacher.model
    assert teacher.cfg.train == bundled_teacher.provenance.train


def test_the_benchmark_sweeps_share_their_teacher_and_first_student(their_data):
    """Run into one folder, the compress sweep finds distill's teacher and student-kl-T4 done."""
    first = {r.name: r.cfg for r in load_sweep(ROOT / "benchmarks/distill.sweep.yaml").runs}
    second = {r.name: r.cfg for r in load_sweep(ROOT / "benchmarks/compress.sweep.yaml").runs}
    assert first["teacher"] == second["teacher"]
    assert first["student-kl-T4"] == second["student-kl-T4"]


# ---------------------------------------------------------------- running


@pytest.mark.slow
def test_a_failed_run_fixed_then_rerun_leaves_the_finished_run_untouched(tmp_path, tiny_dataset):
    bad = make_dataset(tmp_path / "bad", {"sheila": 20})  # keyword clips only: cannot train
    runs = TEACHER + f"  - {{stage: teacher, name: second, data: {{path: {bad}}}}}\n"
    sweep = write_sweep(tmp_path / "s.yaml", tiny_dataset, runs)
    out = tmp_path / "out"
    with cores(1):
        res = kws("sweep", sweep, "--out", out)
    assert res.exit_code == 1, res.output
    assert "second: failed" in res.output and "1 of 2 runs failed" in res.output
    assert f"kws sweep {sweep} --out {out}` again" in res.output
    finished = files_of(out / "teacher")
    assert "metrics.json" in finished and not (out / "second").exists()

    make_dataset(bad, {"sheila": 20, "no": 40}, seed=1)  # fixed
    with cores(1):
        res = kws("sweep", sweep, "--out", out)
    assert res.exit_code == 0, res.output
    assert "teacher: finished already, skipped" in res.output
    assert "second: training" in res.output and "teacher: training" not in res.output
    assert files_of(out / "teacher") == finished  # not retrained, not rewritten
    assert (out / "second" / "metrics.json").is_file()


@pytest.mark.slow
def test_ctrl_c_mid_sweep_then_rerun_resumes_the_interrupted_run_only(tmp_path, tiny_dataset):
    runs = TEACHER + "  - {stage: distill, model: {hidden_size: 6}, train: {num_epochs: 12}}\n"
    sweep = write_sweep(tmp_path / "s.yaml", tiny_dataset, runs)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "kwscli", "sweep", str(sweep), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    student = out / "student-kl-T4"
    deadline = time.monotonic() + 180
    while not (student / "last.pt").is_file() and proc.poll() is None:
        assert time.monotonic() < deadline, "the student never saved an epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C, once its first epoch is saved
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "sweep interrupted" in output and "Traceback" not in output
    teacher = files_of(out / "teacher")
    saved = len(json.loads((student / "history.json").read_text()))
    assert 1 <= saved < 12

    with cores(1):
        res = kws("sweep", sweep, "--out", out)
    assert res.exit_code == 0, res.output
    assert "teacher: finished already, skipped" in res.output
    assert f"student-kl-T4: epochs 1-{saved} were saved; on from {saved + 1}" in res.output
    assert files_of(out / "teacher") == teacher
    assert json.loads((student / "metrics.json").read_text())["epochs"] == 12


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
def test_two_workers_give_the_same_runs_table_as_one(tmp_path, tiny_dataset):
    """Each run gets one thread either way (one core for one worker, two for two): the runs'
    thread count, not the processes, is what could change their last bits."""
    runs = TEACHER + (
        "  - {stage: distill, model: {hidden_size: 6}, compress: [fp16],\n"
        "     grid: {distill.loss: [mse, kl]}}\n"
    )
    sweep = write_sweep(tmp_path / "s.yaml", tiny_dataset, runs)
    with cores(1):
        one = kws("sweep", sweep, "--out", tmp_path / "one", "--workers", "1")
    with cores(2):
        two = kws("sweep", sweep, "--out", tmp_path / "two", "--workers", "2")
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    table = runs_table(tmp_path / "one")
    assert [r["name"] for r in table] == [
        "student-kl-T4", "student-kl-T4/model.fp16.pt", "student-mse",
        "student-mse/model.fp16.pt", "teacher"]  # fmt: skip
    assert runs_table(tmp_path / "two") == table
    assert (tmp_path / "two" / "s.tradeoff.png").read_bytes()[:4] == b"\x89PNG"
