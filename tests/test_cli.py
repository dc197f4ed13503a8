"""The `kws` CLI end to end: happy paths and every bad input, through CliRunner or a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from kwscli.cli import app
from tests.conftest import make_dataset

runner = CliRunner()


def kws(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, *needles: str) -> None:
    """A user mistake: non-zero exit, `error:` message naming the problem, no traceback."""
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert "error:" in res.output
    for n in needles:
        assert n in res.output, res.output


# ---------------------------------------------------------------- startup


@pytest.mark.slow
def test_help_does_not_import_torch():
    code = (
        "import sys; from kwscli.cli import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "assert 'teacher' in r.output; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_python_m_kwscli_runs():
    out = subprocess.run(
        [sys.executable, "-m", "kwscli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("kws ")


# ---------------------------------------------------------------- config


def test_print_config_shows_resolved_values_flags_over_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden_size: 32\n  gru_num_layers: 1\ntrain:\n  num_epochs: 7\n")
    res = kws("teacher", "--config", cfg, "--hidden-size", "48", "--print-config")
    assert res.exit_code == 0, res.output
    resolved = yaml.safe_load(res.output)
    assert resolved["model"]["hidden_size"] == 48  # flag wins
    assert resolved["model"]["gru_num_layers"] == 1  # from the file
    assert resolved["train"]["num_epochs"] == 7
    assert resolved["model"]["kernel_size"] == [5, 20]  # course default


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--stride", "0", "8"], "--stride[0]"),
        (["--hidden-size", "-3"], "--hidden-size"),
        (["--kernel-size", "5", "500"], "no time steps"),
        (["--kernel-size", "41", "20"], "no output rows"),
        (["--lr", "0"], "--lr"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_invalid_values_exit_2_with_field_message(args, needle):
    res = kws("teacher", *args, "--print-config")
    assert res.exit_code == 2, res.output
    one_line_error(res, needle)


def test_unknown_key_in_config_file(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": {"hiden_size": 3}}))
    res = kws("teacher", "--config", cfg)
    assert res.exit_code == 2
    one_line_error(res, "model.hiden_size", "unknown setting")


def test_wrong_type_in_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  batch_size: lots\n")
    res = kws("teacher", "--config", cfg)
    assert res.exit_code == 2
    one_line_error(res, "train.batch_size")


# ---------------------------------------------------------------- teacher + evaluate


def test_teacher_writes_a_complete_run_folder(trained_teacher):
    run = trained_teacher.parent
    for f in ("model.pt", "last.pt", "history.json", "config.yaml", "curves.png", "metrics.json"):
        assert (run / f).is_file(), f
    final = json.loads((run / "metrics.json").read_text())
    from kwscli.config import ModelConfig
    from kwscli.models.crnn import CRNN, count_parameters

    assert final["params"] == count_parameters(CRNN(ModelConfig(hidden_size=16), 40))
    assert final["val_au_fa_fr"] == min(
        h["val_au_fa_fr"] for h in json.loads((run / "history.json").read_text())
    )
    assert final["macs_2s"] > final["macs_1s"] > 0 and final["kind"] == "teacher"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    ckpt = torch.load(trained_teacher, weights_only=True)
    assert ckpt["kind"] == "teacher" and ckpt["keyword"] == "sheila"
    assert ckpt["model"]["hidden_size"] == 16
    assert ckpt["metrics"]["val_au_fa_fr"] == min(h["val_au_fa_fr"] for h in history)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_teacher_learns_the_toy_task(trained_teacher):
    """Three short epochs on chirp-vs-tone clips beat chance (au_fa_fr ≈ 0.11 here) by far."""
    history = json.loads((trained_teacher.parent / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert min(h["val_au_fa_fr"] for h in history) < 0.05


def test_evaluate_json_and_plot(trained_teacher, tiny_dataset, tmp_path):
    plot = tmp_path / "fafr.png"
    res = kws("evaluate", trained_teacher, "--json", "--plot", plot, "--no-latency")
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.stdout)
    assert report["kind"] == "teacher" and report["split"] == "val"
    assert report["data"] == str(tiny_dataset.resolve())  # taken from the checkpoint
    assert report["clips"] > 0 and 0 < report["keyword_clips"] < report["clips"]
    assert 0 <= report["au_fa_fr"] <= 1
    assert [op["target_far"] for op in report["operating_points"]] == [0.001, 0.01, 0.05]
    assert report["params"] > 0 and report["size_bytes"] > 0
    assert report["macs_2s"] > report["macs_1s"] > 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_table_on_test_split(trained_teacher):
    res = kws("evaluate", trained_teacher, "--split", "test", "--no-latency")
    assert res.exit_code == 0, res.output
    assert "au_fa_fr" in res.output and "teacher" in res.output


def test_evaluate_on_real_mini_sample(trained_teacher, mini_dataset):
    res = kws(
        "evaluate",
        trained_teacher,
        "--data",
        mini_dataset,
        "--split",
        "all",
        "--json",
        "--no-latency",
    )
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.stdout)
    assert report["keyword_clips"] == 10
    assert report["clips"] == sum(1 for _ in mini_dataset.glob("*/*.wav")) - len(
        list(mini_dataset.glob("_background_noise_/*.wav"))
    )


def test_existing_run_is_not_overwritten(trained_teacher):
    runs = trained_teacher.parent.parent
    before = trained_teacher.read_bytes()
    res = kws("teacher", "--data", "unused", "--runs-dir", runs, "--name", "t")
    one_line_error(res, "already holds a run", "--force")
    assert trained_teacher.read_bytes() == before


@pytest.mark.slow
def test_resume_without_a_run_is_an_error(tiny_dataset, tmp_path):
    res = kws("teacher", "--data", tiny_dataset, "--runs-dir", tmp_path, "--resume")
    one_line_error(res, "nothing to resume")


# ---------------------------------------------------------------- bad data


def test_missing_dataset_folder(tmp_path):
    res = kws("teacher", "--data", tmp_path / "nope", "--runs-dir", tmp_path)
    one_line_error(res, "dataset folder not found", "kws data synth")


def test_folder_without_wavs(tmp_path):
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    res = kws("teacher", "--data", tmp_path / "empty", "--runs-dir", tmp_path)
    one_line_error(res, "no wav files")


def test_unknown_keyword(tiny_dataset, tmp_path):
    res = kws("teacher", "--data", tiny_dataset, "--keyword", "marvin", "--runs-dir", tmp_path)
    one_line_error(res, "'marvin' is not a folder", "sheila")


@pytest.mark.slow
def test_corrupt_and_empty_wavs_are_skipped_and_counted(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"sheila": 20, "yes": 20})
    (ds / "yes" / "corrupt_nohash_0.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    (ds / "yes" / "empty_nohash_0.wav").write_bytes(b"")
    res = kws(
        "teacher",
        "--data",
        ds,
        "--runs-dir",
        tmp_path / "runs",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--hidden-size",
        "8",
    )
    assert res.exit_code == 0, res.output
    assert "skipped 2 unreadable files" in res.output


def test_debug_shows_traceback(tmp_path):
    res = runner.invoke(
        app, ["--debug", "teacher", "--data", str(tmp_path / "nope"), "--runs-dir", str(tmp_path)]
    )
    assert res.exit_code != 0
    assert res.exception is not None and type(res.exception).__name__ == "DataError"


# ---------------------------------------------------------------- bad checkpoints


def test_evaluate_missing_checkpoint(tmp_path):
    one_line_error(kws("evaluate", tmp_path / "nope.pt"), "checkpoint not found")


def test_evaluate_not_a_checkpoint(tmp_path):
    f = tmp_path / "notes.pt"
    f.write_text("hello")
    one_line_error(kws("evaluate", f), "not a readable checkpoint")


def test_evaluate_plain_state_dict(tmp_path):
    f = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(3)}, f)
    one_line_error(kws("evaluate", f), "not a kws checkpoint")


def test_evaluate_truncated_checkpoint(trained_teacher, tmp_path):
    f = tmp_path / "cut.pt"
    data = trained_teacher.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    one_line_error(kws("evaluate", f), "truncated")


def test_evaluate_bad_split(trained_teacher):
    one_line_error(kws("evaluate", trained_teacher, "--split", "dev"), "--split")


def test_evaluate_refuses_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pt"
    torch.save({"format": "kws-checkpoint", "x": _Evil(str(marker))}, f)
    one_line_error(kws("evaluate", f), "refused")
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_help_texts_keep_their_bracketed_defaults():
    """Rich markup would eat `[default: ...]`; help must still say where defaults come from."""
    res = runner.invoke(app, ["detect", "--help"])
    assert res.exit_code == 0
    assert "bundled" in res.output and "model's" in res.output


@pytest.mark.slow
def test_evaluate_scores_the_very_val_set_training_used_random_split(tiny_dataset, tmp_path):
    """A random split is re-created from the checkpoint (mode, split seed, fraction), whatever
    the training seed: evaluate's val au_fa_fr equals the one training recorded, exactly."""
    res = kws(
        "teacher",
        "--data",
        tiny_dataset,
        "--runs-dir",
        tmp_path,
        "--name",
        "r",
        "--split",
        "random",
        "--seed",
        "7",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--hidden-size",
        "8",
    )
    assert res.exit_code == 0, res.output
    model = tmp_path / "r" / "model.pt"
    recorded = torch.load(model, weights_only=True)["metrics"]["val_au_fa_fr"]
    (report,) = json.loads(kws("evaluate", model, "--json", "--no-latency").stdout)
    assert report["au_fa_fr"] == recorded
    assert report["clips"] == round(180 * 0.2)  # the 20 % val share of the 180 clips


@pytest.mark.slow
def test_resume_refuses_changed_settings_but_allows_more_epochs(tiny_dataset, tmp_path):
    base = [
        "teacher",
        "--data",
        tiny_dataset,
        "--runs-dir",
        tmp_path,
        "--name",
        "r",
        "--batch-size",
        "32",
        "--hidden-size",
        "8",
        "--no-augment",
    ]
    assert kws(*base, "--epochs", "1").exit_code == 0
    res = kws(*base[:-3], "--hidden-size", "12", "--no-augment", "--epochs", "2", "--resume")
    assert res.exit_code == 2 and "model.hidden_size" in res.output, res.output
    assert kws(*base, "--epochs", "2", "--resume").exit_code == 0
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_force_with_bad_data_keeps_the_previous_run(trained_teacher, tmp_path):
    import shutil

    shutil.copytree(trained_teacher.parent, tmp_path / "t")
    before = (tmp_path / "t" / "model.pt").read_bytes()
    res = kws(
        "teacher", "--data", tmp_path / "missing", "--runs-dir", tmp_path, "--name", "t", "--force"
    )
    assert res.exit_code == 1 and "dataset folder not found" in res.output
    assert (tmp_path / "t" / "model.pt").read_bytes() == before


def test_evaluate_reports_frr_at_the_false_alarm_rates_asked(trained_teacher):
    res = kws(
        "evaluate", trained_teacher, "--far", "0.02", "--far", "0.2", "--json", "--no-latency"
    )
    assert res.exit_code == 0, res.output
    (report,) = json.loads(res.stdout)
    assert [op["target_far"] for op in report["operating_points"]] == [0.02, 0.2]
    assert all(op["far"] <= op["target_far"] for op in report["operating_points"])
    bad = kws("evaluate", trained_teacher, "--far", "2")
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output


@pytest.mark.parametrize("example", ["teacher.yaml", "student.yaml"])
def test_example_configs_validate(example, trained_teacher):
    path = Path(__file__).resolve().parents[1] / "examples" / example
    cmd = "teacher" if example == "teacher.yaml" else "distill"
    extra = [] if cmd == "teacher" else ["--teacher", trained_teacher]
    res = kws(cmd, "--config", path, *extra, "--print-config")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.stdout)["name"] == yaml.safe_load(path.read_text())["name"]
