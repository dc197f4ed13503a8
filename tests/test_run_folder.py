"""A run folder never loses a run: --force replaces an earlier run only once the new one has
saved a checkpoint, a start that saved nothing leaves nothing (not even a folder), and a run
killed while an earlier one waited aside gets it back at the next start."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from kwscli.config import RunConfig
from kwscli.engine import NoCallbacks
from kwscli.errors import Interrupted, KwsError
from kwscli.run_folder import ASIDE
from kwscli.train import train_run


def config(data: Path, runs: Path, name: str = "r", epochs: int = 1) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": name,
            "runs_dir": str(runs),
            "data": {"path": str(data)},
            "model": {"hidden_size": 8, "gru_num_layers": 1},
            "train": {"num_epochs": epochs, "epoch_size": 64, "batch_size": 32, "seed": 0},
        }
    )


class CtrlCTwiceAtFirstStep(NoCallbacks):
    """Ctrl-C twice at the first step: the run stops at once, before any checkpoint."""

    def on_step(self, epoch, step, loss):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(10_000))


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_leaves_no_folder_and_the_same_command_reruns(
    tiny_dataset, tmp_path, python_sigint
):
    cfg = config(tiny_dataset, tmp_path / "runs")
    with pytest.raises(Interrupted, match="run the same command to start again"):
        train_run(cfg, callbacks=CtrlCTwiceAtFirstStep())
    assert not (tmp_path / "runs").exists()  # the folders it made are gone too
    result = train_run(cfg)  # the same command, no --force, no --resume
    assert result.checkpoint.is_file()


@pytest.mark.slow
def test_force_keeps_the_earlier_run_until_the_new_one_saves(tiny_dataset, tmp_path, python_sigint):
    cfg = config(tiny_dataset, tmp_path / "runs")
    run_dir = train_run(cfg).checkpoint.parent
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(Interrupted):
        train_run(cfg, force=True, callbacks=CtrlCTwiceAtFirstStep())
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before and not (run_dir / ASIDE).exists()
    train_run(config(tiny_dataset, tmp_path / "runs", epochs=2), force=True)  # now it replaces
    assert (run_dir / "model.pt").read_bytes() != before["model.pt"]
    assert not (run_dir / ASIDE).exists()


@pytest.mark.slow
def test_a_run_killed_while_an_earlier_one_waited_aside_gets_it_back(tiny_dataset, tmp_path):
    cfg = config(tiny_dataset, tmp_path / "runs")
    run_dir = train_run(cfg).checkpoint.parent
    model = (run_dir / "model.pt").read_bytes()
    (run_dir / ASIDE).mkdir()  # as a SIGKILL during a --force start leaves it
    for name in ("model.pt", "last.pt", "history.json"):
        (run_dir / name).replace(run_dir / ASIDE / name)
    (run_dir / "config.yaml").write_text("name: half-written new run\n")
    with pytest.raises(KwsError, match="already holds a run"):  # restored, so: a run is here
        train_run(cfg)
    assert (run_dir / "model.pt").read_bytes() == model and not (run_dir / ASIDE).exists()


@pytest.mark.slow
def test_a_start_that_fails_on_its_data_leaves_no_folder(tmp_path):
    cfg = config(tmp_path / "no-such-data", tmp_path / "runs")
    with pytest.raises(KwsError, match="dataset folder not found"):
        train_run(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"not a torch file", None])
def test_resume_from_a_damaged_or_foreign_state_is_one_line(tiny_dataset, tmp_path, content):
    import torch

    cfg = config(tiny_dataset, tmp_path / "runs")
    last = train_run(cfg).checkpoint.parent / "last.pt"
    if content is None:
        torch.save({"model": {"x": torch.zeros(1)}}, last)  # a torch file of another shape
    else:
        last.write_bytes(content)
    with pytest.raises(KwsError, match="not a resumable kws state"):
        train_run(config(tiny_dataset, tmp_path / "runs", epochs=2), resume=True)
