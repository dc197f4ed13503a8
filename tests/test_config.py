"""Settings: course-teacher defaults, `field: message` errors, files and CLI overrides, and no
exception but ConfigError for any input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kwscli.config import (
    DataConfig,
    FeatureConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    build_config,
    read_config_file,
    validate,
)
from kwscli.errors import ConfigError


def config_error(cls, data) -> str:
    with pytest.raises(ConfigError) as info:
        validate(cls, data)
    return str(info.value)


# ---------------------------------------------------------------- defaults


def test_defaults_are_the_course_teacher():
    """SPEC §2 values, written out here rather than read from the code."""
    cfg = RunConfig()
    assert cfg.data.keyword == "sheila"
    assert (cfg.train.batch_size, cfg.train.learning_rate, cfg.train.weight_decay) == (
        128,
        3e-4,
        1e-5,
    )
    assert (cfg.train.num_epochs, cfg.train.grad_clip) == (20, 5.0)
    f = cfg.features
    assert (f.sample_rate, f.n_fft, f.win_length, f.hop_length, f.n_mels) == (
        16000,
        400,
        400,
        160,
        40,
    )
    m = cfg.model
    assert (m.cnn_out_channels, m.kernel_size, m.stride) == (8, (5, 20), (2, 8))
    assert (m.hidden_size, m.gru_num_layers, m.bidirectional, m.num_classes) == (64, 2, False, 2)
    assert m.dropout == 0.1
    assert f.clip_frames == 101


# ---------------------------------------------------------------- validation messages


def test_unknown_key_is_rejected_with_a_line_naming_it():
    msg = config_error(RunConfig, {"model": {"hiden_size": 32}})
    assert msg.splitlines()[0].startswith("model.hiden_size: unknown setting")


def test_unknown_top_level_key_is_rejected():
    assert config_error(TrainConfig, {"epochs": 3}).startswith("epochs: unknown setting")


@pytest.mark.parametrize(
    "cls, data, field",
    [
        (TrainConfig, {"batch_size": "many"}, "batch_size"),
        (TrainConfig, {"learning_rate": "fast"}, "learning_rate"),
        (ModelConfig, {"kernel_size": "5x20"}, "kernel_size"),
        (ModelConfig, {"bidirectional": "perhaps"}, "bidirectional"),
        (DataConfig, {"split": "speaker"}, "split"),
        (TrainConfig, {"device": "tpu"}, "device"),
        (RunConfig, {"model": [1, 2]}, "model"),
    ],
)
def test_wrong_types_name_the_field(cls, data, field):
    assert config_error(cls, data).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "cls, data, field",
    [
        (TrainConfig, {"batch_size": -4}, "batch_size"),
        (TrainConfig, {"num_epochs": 0}, "num_epochs"),
        (TrainConfig, {"learning_rate": -1e-3}, "learning_rate"),
        (ModelConfig, {"hidden_size": 0}, "hidden_size"),
        (ModelConfig, {"cnn_out_channels": -1}, "cnn_out_channels"),
        (FeatureConfig, {"n_mels": -40}, "n_mels"),
        (ModelConfig, {"kernel_size": [5, -20]}, "kernel_size[1]"),
    ],
)
def test_negative_or_zero_sizes_are_rejected(cls, data, field):
    assert config_error(cls, data).startswith(f"{field}: ")


def test_zero_stride_names_the_element():
    msg = config_error(RunConfig, {"model": {"stride": [0, 8]}})
    assert msg.startswith("model.stride[0]: ")
    assert "1" in msg  # says what is expected (≥ 1)


def test_several_problems_give_one_line_each():
    msg = config_error(RunConfig, {"model": {"hidden_size": 0, "stride": [2, 0]}})
    assert len(msg.splitlines()) == 2


def test_kernel_taller_than_the_mel_bands_is_rejected():
    msg = config_error(RunConfig, {"model": {"kernel_size": [41, 20]}})
    assert "kernel_size[0]=41" in msg and "n_mels=40" in msg


def test_kernel_longer_than_the_clip_is_rejected():
    """0.1 s at hop 160 is 11 frames; a 20-frame kernel has no output."""
    msg = config_error(RunConfig, {"features": {"clip_seconds": 0.1}})
    assert "kernel_size[1]=20" in msg and "11 frames" in msg


def test_kernel_exactly_the_input_size_is_allowed():
    cfg = validate(RunConfig, {"model": {"kernel_size": [40, 101]}})
    assert cfg.model.kernel_size == (40, 101)


def test_window_longer_than_fft_is_rejected():
    msg = config_error(FeatureConfig, {"win_length": 512})
    assert "win_length=512" in msg


# ---------------------------------------------------------------- files and overrides


def test_yaml_and_json_files_load(tmp_path):
    settings_ = {"model": {"hidden_size": 32, "stride": [2, 10]}, "train": {"num_epochs": 3}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(settings_))
    (tmp_path / "c.json").write_text(json.dumps(settings_))
    for name in ("c.yaml", "c.json"):
        cfg = build_config(RunConfig, tmp_path / name)
        assert cfg.model.hidden_size == 32 and cfg.model.stride == (2, 10)
        assert cfg.train.num_epochs == 3 and cfg.train.batch_size == 128


def test_cli_overrides_win_over_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  hidden_size: 32\ntrain:\n  seed: 7\n")
    cfg = build_config(RunConfig, tmp_path / "c.yaml", {"model": {"hidden_size": 16}})
    assert cfg.model.hidden_size == 16
    assert cfg.train.seed == 7  # sibling settings from the file survive the merge


def test_none_overrides_are_ignored(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  hidden_size: 32\n")
    cfg = build_config(
        RunConfig, tmp_path / "c.yaml", {"model": {"hidden_size": None}, "train": {"seed": None}}
    )
    assert cfg.model.hidden_size == 32 and cfg.train.seed == 0


def test_base_is_below_file_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("train:\n  seed: 3\n")
    cfg = build_config(
        RunConfig,
        tmp_path / "c.yaml",
        {"name": "x"},
        base={"train": {"seed": 1, "batch_size": 8}, "name": "base"},
    )
    assert (cfg.train.seed, cfg.train.batch_size, cfg.name) == (3, 8, "x")


def test_empty_yaml_file_means_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    assert build_config(RunConfig, tmp_path / "c.yaml") == RunConfig()


@pytest.mark.parametrize(
    "name, text, needle",
    [
        ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
        ("scalar.yaml", "42\n", "expected a mapping"),
        ("bad.yaml", "model: [1, 2\n", "not valid YAML/JSON"),
        ("bad.json", '{"model": ', "not valid YAML/JSON"),
    ],
)
def test_bad_config_files_raise_config_error_naming_the_file(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_missing_config_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        build_config(RunConfig, tmp_path / "nope.yaml")


def test_file_values_are_validated_too(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  stride: [0, 8]\n")
    with pytest.raises(ConfigError, match=r"model\.stride\[0\]"):
        build_config(RunConfig, tmp_path / "c.yaml")


# ---------------------------------------------------------------- no crash on any input


def test_huge_integer_is_a_config_error_not_a_crash():
    """A YAML file may hold any integer; validation must answer with ConfigError, not let an
    OverflowError (int too large to convert to float) escape from clip_samples."""
    with pytest.raises(ConfigError, match=r"features\.sample_rate"):
        validate(RunConfig, {"features": {"sample_rate": 10**400}})


@pytest.mark.parametrize("name", [".", ".."])
def test_run_name_cannot_leave_the_runs_folder(name):
    """runs_dir/name must be a new folder inside runs_dir: '..' would put (and with --force,
    delete) model.pt, last.pt... in the runs folder's parent."""
    with pytest.raises(ConfigError):
        validate(RunConfig, {"name": name})


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**80))
def test_an_accepted_seed_can_seed_torch(seed):
    """The engine seeds torch.Generator with train.seed: any seed the config accepts must work."""
    try:
        cfg = validate(TrainConfig, {"seed": seed})
    except ConfigError:
        return
    torch.Generator().manual_seed(cfg.seed)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def field_dicts(cls):
    names = [*cls.model_fields, "bogus"]
    return st.dictionaries(st.sampled_from(names), values, max_size=4)


run_dicts = st.fixed_dictionaries(
    {},
    optional={
        "name": values,
        "model": st.one_of(values, field_dicts(ModelConfig)),
        "train": st.one_of(values, field_dicts(TrainConfig)),
        "features": st.one_of(values, field_dicts(FeatureConfig)),
        "data": st.one_of(values, field_dicts(DataConfig)),
        "extra": values,
    },
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(ModelConfig), field_dicts(ModelConfig)),
        st.tuples(st.just(TrainConfig), field_dicts(TrainConfig)),
        st.tuples(st.just(FeatureConfig), field_dicts(FeatureConfig)),
        st.tuples(st.just(RunConfig), run_dicts),
    )
)
@pytest.mark.slow
def test_random_settings_give_a_config_or_config_error(case):
    cls, data = case
    try:
        cfg = validate(cls, data)
    except ConfigError as exc:
        assert str(exc).strip()
        return
    assert isinstance(cfg, cls)
