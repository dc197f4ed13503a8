"""Training under torchrun: every clip of a batch in exactly one rank's share, the torchrun
environment read right, a global batch that does not split as one error line, and real 2-process
CPU runs of `kws teacher` and `kws distill` (one run folder, rank 0 alone reporting, --resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kwscli import distributed
from kwscli.cli import app
from kwscli.distributed import World
from tests.conftest import tiny_teacher_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def torchrun_env(rank: int, size: int) -> dict[str, str]:
    """What torchrun sets for one of `size` processes on one machine."""
    ranks = {"RANK": rank, "WORLD_SIZE": size, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": size}
    return {k: str(v) for k, v in ranks.items()} | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [96, 24])
def test_every_clip_of_a_batch_is_in_exactly_one_share(size, n):
    """A global batch that divides by the ranks (checked up front) is split into equal shares
    covering it once."""
    shares = [range(n)[distributed.share(n, World(rank=r, size=size))] for r in range(size)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert {len(s) for s in shares} == {n // size}
    assert distributed.kept(n, World(size=size)) == n


@pytest.mark.parametrize(("n", "size"), [(13, 2), (7, 4), (3, 4), (5, 1)])
def test_a_short_last_batch_drops_only_what_does_not_split(n, size):
    """The epoch's last, short batch: equal shares, its last n % size clips (fewer than the
    ranks) left out, none twice."""
    shares = [range(n)[distributed.share(n, World(rank=r, size=size))] for r in range(size)]
    used = sorted(i for s in shares for i in s)
    assert used == list(range(n - n % size)) == list(range(distributed.kept(n, World(size=size))))


def test_a_process_without_torchrun_is_alone(monkeypatch):
    for key in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    assert distributed.world() == World()
    assert distributed.is_main() and not distributed.active()
    assert distributed.from_main(lambda: 7) == 7  # no process group: just the call
    assert distributed.share(10) == slice(0, 10)


def test_the_torchrun_environment_is_read(monkeypatch):
    for key, value in (torchrun_env(3, 4) | {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}).items():
        monkeypatch.setenv(key, value)
    assert distributed.world() == World(3, 4, 1, 2, launched=True)
    assert not distributed.is_main()


def test_a_batch_that_does_not_split_over_the_ranks_is_one_error(tmp_path, tiny_dataset):
    """--batch-size is the global batch: 33 over 2 processes is refused before any work, by
    rank 0 in one line (exit 2); rank 1 exits the same way, silently."""
    args = tiny_teacher_args(tiny_dataset, tmp_path / "runs", "t") + ["--batch-size", "33"]
    main = CliRunner().invoke(app, args, env=torchrun_env(0, 2))
    assert main.exit_code == 2
    assert main.output.strip().splitlines() == [
        "error: train.batch_size=33: under torchrun it is the global batch, split equally over "
        "the 2 processes; use a multiple of 2"
    ]
    other = CliRunner().invoke(app, args, env=torchrun_env(1, 2))
    assert other.exit_code == 2 and other.output == ""
    assert not (tmp_path / "runs").exists()


def torchrun(args: list[str], procs: int = 2) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = [*TORCHRUN, "--nproc_per_node", str(procs), "-m", "kwscli", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def history(run: Path) -> list[tuple[float, float]]:
    return [(r["train_loss"], r["val_au_fa_fr"]) for r in json.loads(run.read_text())]


def with_epochs(args: list[str], epochs: int) -> list[str]:
    i = args.index("--epochs")
    return [*args[: i + 1], str(epochs), *args[i + 2 :]]


@pytest.mark.slow
def test_two_processes_train_one_run_and_resume_it(tmp_path, tiny_dataset):
    """2-process CPU torchrun: one run folder, rank 0 alone prints, and 1 epoch + --resume to 2
    equals 2 epochs in one go."""
    runs = tmp_path / "runs"
    args = tiny_teacher_args(tiny_dataset, runs, "t")
    first = torchrun(with_epochs(args, 1))
    assert first.stdout.count("best epoch") == 1
    assert [p.name for p in runs.iterdir()] == ["t"]
    files = {p.name for p in (runs / "t").iterdir()}
    assert {"model.pt", "last.pt", "history.json", "config.yaml", "metrics.json"} <= files
    assert not any(name.startswith(".") for name in files)  # no lock or temp file left

    torchrun(with_epochs(args, 2) + ["--resume"])
    torchrun(with_epochs(tiny_teacher_args(tiny_dataset, runs, "straight"), 2))
    resumed = history(runs / "t" / "history.json")
    assert len(resumed) == 2
    assert resumed == history(runs / "straight" / "history.json")


@pytest.mark.slow
def test_two_processes_distil_through_ddp(tmp_path, trained_teacher):
    """A student's distillation losses (attention, hard negatives, mixup) reach the model's
    outputs through DDP; the teacher runs on each rank's share."""
    runs = tmp_path / "runs"
    torchrun(["distill", "--teacher", str(trained_teacher), "--runs-dir", str(runs),
              "--name", "s", "--epochs", "1", "--batch-size", "32", "--epoch-size", "320",
              "--hidden-size", "8", "--attention-weight", "1", "--hard-negatives", "0.5",
              "--mixup", "0.2"])  # fmt: skip
    assert (runs / "s" / "model.pt").is_file()
    assert len(history(runs / "s" / "history.json")) == 1
