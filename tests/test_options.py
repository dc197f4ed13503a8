"""One settings schema: every training setting is a flag of `kws teacher`/`kws distill` (and no
flag is anything else), its help shows its default and choices, YAML keys are the flag words,
and an error names the flag the user typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.config import RunConfig
from kwscli.options import settings

BUNDLED_TEACHER = str(Path(__file__).parents[1] / "kwscli" / "assets" / "teacher.pt")
CONTROLS = {"config", "print_config", "resume", "force", "help"}


def leaves(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf setting of a pydantic model, walked independently of kwscli/options.py."""
    out = set()
    for name, field in model.model_fields.items():
        sub = next(
            (t for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
             if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )  # fmt: skip
        out |= leaves(sub, f"{prefix}{name}.") if sub else {prefix + name}
    return out


def command(name: str):
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("name", ["teacher", "distill"])
def test_every_setting_has_a_flag_and_every_flag_a_setting(name):
    expected = leaves(RunConfig)
    if name == "teacher":
        expected = {k for k in expected if not k.startswith("distill.")}
    specs = {s.param: s for s in settings(student=name == "distill")}
    assert {s.key for s in specs.values()} == expected
    params = {p.name for p in command(name).params}
    assert params - CONTROLS == set(specs), "a flag that is no setting, or a setting with no flag"
    for s in specs.values():  # the flag is the YAML key with dashes (or declares its own)
        declared = (s.field.json_schema_extra or {}).get("flags")
        assert declared or s.flags == ["--" + s.path[-1].replace("_", "-")]


def test_help_shows_every_default_and_every_choice():
    res = CliRunner().invoke(app, ["teacher", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for s in settings(student=False):
        shown = s.default_text({})
        if shown is not None:
            assert f"[default: ({shown})]" in text, s.key
    for choices in ("<official|random>", "<constant|cosine>"):
        assert choices in text
    for flag in ("--num-epochs,--epochs", "--learning-rate,--lr", "--augment --no-augment"):
        assert flag in text


def test_distill_help_shows_the_student_defaults():
    res = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "--hidden-size N GRU hidden size. [default: (30)]" in text
    assert "--stride F T Conv stride (freq, time). [default: (7 12)]" in text
    assert "<mse|ce|kl>" in text and "[default: (kl)]" in text


def test_print_config_keys_are_the_flag_words():
    res = CliRunner().invoke(
        app, ["teacher", "--batch-size", "64", "--n-mels", "32", "--print-config"]
    )
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["train"]["batch_size"] == 64 and cfg["features"]["n_mels"] == 32
    flat = {f"{sec}.{k}" for sec, v in cfg.items() if isinstance(v, dict) for k in v}
    flat |= {k for k, v in cfg.items() if not isinstance(v, dict)}
    assert flat == leaves(RunConfig) - {
        k for k in leaves(RunConfig) if k.startswith("distill.")
    } | {"distill"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lr", "0"], "--lr:"),
        (["--learning-rate", "0"], "--learning-rate:"),
        (["--learning-rate=2"], "--learning-rate:"),
        (["--epochs", "0"], "--epochs:"),
        (["--stride", "0", "8"], "--stride[0]:"),
        (["--device", "tpu"], "--device:"),
    ],
)
def test_a_bad_flag_value_is_reported_under_the_flag_as_typed(args, needle):
    res = CliRunner().invoke(app, ["teacher", *args, "--print-config"])
    assert res.exit_code == 2
    assert needle in res.output and "train." not in res.output and "model." not in res.output


def test_a_bad_file_value_is_reported_under_its_yaml_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  learning_rate: 0\n")
    res = CliRunner().invoke(app, ["teacher", "--config", str(cfg), "--print-config"])
    assert res.exit_code == 2 and "train.learning_rate:" in res.output


def test_choices_are_read_whatever_the_case(tmp_path):
    res = CliRunner().invoke(
        app, ["teacher", "--split", "RANDOM", "--lr-schedule", "Cosine", "--print-config"]
    )
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert (cfg["data"]["split"], cfg["train"]["lr_schedule"]) == ("random", "cosine")
    student = CliRunner().invoke(
        app, ["distill", "--teacher", BUNDLED_TEACHER, "--loss", "KL", "--print-config"]
    )
    assert student.exit_code == 0, student.output
    assert yaml.safe_load(student.output)["distill"]["loss"] == "kl"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("distill:\n  loss: MSE\n")
    from_file = CliRunner().invoke(
        app, ["distill", "--teacher", BUNDLED_TEACHER, "-c", str(yaml_file), "--print-config"]
    )
    assert yaml.safe_load(from_file.output)["distill"]["loss"] == "mse"


def test_an_unknown_choice_names_the_choices():
    res = CliRunner().invoke(app, ["teacher", "--split", "half", "--print-config"])
    assert res.exit_code == 2 and "official" in res.output and "random" in res.output
