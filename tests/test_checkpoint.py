"""Checkpoints: a round trip rebuilds the same model; the file is plain weights_only data; every
other file is refused with CheckpointError and never runs code; writes are atomic."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import soundfile as sf
import torch

from kwscli.checkpoint import Checkpoint, Provenance, load_checkpoint, save_checkpoint
from kwscli.config import FeatureConfig, ModelConfig
from kwscli.errors import CheckpointError
from kwscli.files import atomic_write
from kwscli.inference import build_model
from kwscli.models.crnn import CRNN

SMALL = ModelConfig(cnn_out_channels=2, hidden_size=8, gru_num_layers=1)


def small_checkpoint(seed: int = 0, **kw) -> tuple[CRNN, Checkpoint]:
    torch.manual_seed(seed)
    model = CRNN(SMALL, 40).eval()
    ckpt = Checkpoint(
        "teacher",
        SMALL,
        FeatureConfig(),
        "sheila",
        model.state_dict(),
        metrics={"val_au_fa_fr": 1e-4},
        threshold=0.4,
        provenance=Provenance(loss="ce"),
        **kw,
    )
    return model, ckpt


@pytest.fixture
def saved(tmp_path) -> tuple[CRNN, pathlib.Path]:
    model, ckpt = small_checkpoint()
    return model, save_checkpoint(ckpt, tmp_path / "model.pt")


def refusal(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------- round trip


def test_round_trip_rebuilds_a_model_with_identical_outputs(saved):
    model, path = saved
    ckpt = load_checkpoint(path)
    rebuilt = build_model(ckpt)
    x = torch.randn(3, 40, 101, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert not rebuilt.training


def test_round_trip_keeps_the_description(saved):
    _, path = saved
    ckpt = load_checkpoint(path)
    assert (ckpt.kind, ckpt.keyword, ckpt.threshold) == ("teacher", "sheila", 0.4)
    assert ckpt.model == SMALL and ckpt.features == FeatureConfig()
    assert ckpt.metrics == {"val_au_fa_fr": 1e-4} and ckpt.provenance == Provenance(loss="ce")
    assert ckpt.created and ckpt.path == path


def test_file_loads_with_plain_weights_only_torch_load(saved):
    _, path = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "kws-checkpoint" and raw["kind"] == "teacher"
    assert raw["model"]["hidden_size"] == 8
    assert isinstance(raw["state_dict"]["classifier.weight"], torch.Tensor)


def test_unknown_kind_is_not_saved(tmp_path):
    _, ckpt = small_checkpoint()
    ckpt.kind = "mystery"
    with pytest.raises(ValueError, match="mystery"):
        save_checkpoint(ckpt, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    _, ckpt = small_checkpoint()
    ckpt.model = SMALL.model_copy(update={"hidden_size": 9})
    ckpt = load_checkpoint(save_checkpoint(ckpt, tmp_path / "m.pt"))
    with pytest.raises(CheckpointError, match="weights do not match"):
        build_model(ckpt)


# ---------------------------------------------------------------- refusals


def test_missing_path_is_refused(tmp_path):
    assert "not found" in refusal(tmp_path / "absent.pt")


def test_directory_is_refused(tmp_path):
    assert "folder" in refusal(tmp_path)


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    assert "empty" in refusal(tmp_path / "e.pt")


def test_truncated_checkpoint_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    assert "not a readable checkpoint" in refusal(tmp_path / "half.pt")


def test_random_bytes_are_reported_as_unreadable_not_as_code(tmp_path):
    """Garbage is not a security threat: the message must not claim it holds code."""
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    msg = refusal(path)
    assert "run code" not in msg, msg


def test_a_wav_passed_as_checkpoint_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(1600, dtype=np.float32), 16_000, subtype="PCM_16")
    msg = refusal(path)
    assert "run code" not in msg, msg


def test_plain_state_dict_is_refused(tmp_path):
    torch.save(CRNN(SMALL, 40).state_dict(), tmp_path / "sd.pt")
    assert "not a kws checkpoint" in refusal(tmp_path / "sd.pt")


def test_newer_format_is_refused(tmp_path):
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "new.pt")
    assert "newer kws" in refusal(tmp_path / "new.pt")


def test_damaged_description_is_refused(tmp_path):
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    raw["model"] = {"hidden_size": "big"}
    torch.save(raw, tmp_path / "bad.pt")
    assert "damaged" in refusal(tmp_path / "bad.pt")


class _TouchOnLoad:
    """Unpickling this calls Path.touch(marker): a stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    raw["info"] = {"payload": _TouchOnLoad(marker)}
    torch.save(raw, tmp_path / "evil.pt")
    assert not marker.exists()
    msg = refusal(tmp_path / "evil.pt")
    assert "refused" in msg
    assert not marker.exists()


# ---------------------------------------------------------------- atomic writes


def test_save_leaves_no_temp_files(tmp_path):
    _, ckpt = small_checkpoint()
    save_checkpoint(ckpt, tmp_path / "a" / "model.pt")
    save_checkpoint(ckpt, tmp_path / "a" / "model.pt")  # overwrite
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model.pt"]


def test_failed_save_keeps_the_old_file_intact(saved):
    _, path = saved
    before = path.read_bytes()
    _, ckpt = small_checkpoint(seed=1)
    ckpt.metrics = {"unpicklable": lambda: None}  # torch.save fails part-way through
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        save_checkpoint(ckpt, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    load_checkpoint(path)


def test_exception_inside_atomic_write_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_shipped_checkpoints_name_no_path_of_the_machine_they_were_made_on():
    """Every string in a bundled model's metadata is relative: none starts at a file-system root."""
    from pathlib import Path

    from kwscli.bundled import BUNDLED

    def strings(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list | tuple):
            for v in x:
                yield from strings(v)
        elif isinstance(x, str):
            yield x

    files = sorted(BUNDLED.glob("*.pt"))
    assert len(files) == 2
    for f in files:
        raw = torch.load(f, weights_only=True)
        absolute = [s for s in strings({k: v for k, v in raw.items() if k != "state_dict"})
                    if Path(s).is_absolute()]  # fmt: skip
        assert absolute == [], f


def test_without_machine_paths_keeps_what_is_inside_the_project_relative(tmp_path):
    from kwscli.checkpoint import without_machine_paths

    info = {"data": str(tmp_path / "data" / "s"), "t": [f"{tmp_path.parent}/x/m.pt", "runs/a"]}
    assert without_machine_paths(info, tmp_path) == {"data": "data/s", "t": ["m.pt", "runs/a"]}


# ---------------------------------------------------------------- typed provenance


def test_provenance_round_trips_as_the_settings_models(tmp_path):
    from kwscli.config import DataConfig, DistillConfig, Loss, Split, TrainConfig

    _, ckpt = small_checkpoint()
    ckpt.provenance = Provenance(
        data=DataConfig(path="/d", split="random", split_seed=3, val_fraction=0.3),
        train=TrainConfig(num_epochs=7, lr_schedule="cosine"),
        distill=DistillConfig(loss="mse", attention_weight=0.5),
        loss="mse+attention",
    )
    back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "m.pt")).provenance
    assert back == ckpt.provenance
    assert back.data.split is Split.random and back.distill.loss is Loss.mse
    assert back.train.num_epochs == 7


def test_format_1_flat_data_provenance_is_read_as_data_settings(tmp_path):
    """Checkpoints written before typed provenance (the bundled ones among them) still load."""
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    raw["info"] = {"data": "data/s", "split": "random", "split_seed": 4, "val_fraction": 0.25,
                   "train": {"num_epochs": 3}, "loss": "ce", "from_the_future": 1}  # fmt: skip
    torch.save(raw, tmp_path / "old.pt")
    p = load_checkpoint(tmp_path / "old.pt").provenance
    assert (p.data.path, p.data.split, p.data.split_seed, p.data.val_fraction) == (
        "data/s", "random", 4, 0.25,
    )  # fmt: skip
    assert p.data.keyword == "sheila" and p.train.num_epochs == 3 and p.loss == "ce"


@pytest.mark.parametrize(
    ("info", "needle"),
    [
        ({"train": {"num_epochs": "many"}}, "train.num_epochs"),
        ({"distill": {"loss": "l7"}}, "distill.loss"),
        ({"int8": {"conv": "int4"}}, "int8.conv"),
        ({"teacher": {"path": "t.pt"}}, "teacher.model"),
        ({"data": 5}, "data"),
    ],
)
def test_provenance_of_the_wrong_type_is_one_line_naming_the_entry(tmp_path, info, needle):
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    raw["info"] = info
    torch.save(raw, tmp_path / "bad.pt")
    msg = refusal(tmp_path / "bad.pt")
    assert "damaged" in msg and needle in msg


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda raw: raw.__setitem__("threshold", 5.0), "threshold 5.0 is not a probability"),
        (lambda raw: raw.__setitem__("threshold", float("nan")), "is not a probability"),
        (lambda raw: raw.__setitem__("keyword", ""), "keyword ''"),
        (lambda raw: raw.__setitem__("keyword", "../x"), "keyword '../x'"),
        (lambda raw: raw["state_dict"].__setitem__("classifier.bias", "zero"), "is no tensor"),
        (lambda raw: raw["state_dict"]["classifier.bias"].fill_(float("nan")), "NaN or infinity"),
        (lambda raw: raw.__setitem__("state_dict", {}), "no weights"),
    ],
)
def test_contents_that_lie_are_refused_in_one_line(tmp_path, change, needle):
    _, ckpt = small_checkpoint()
    raw = ckpt.to_dict()
    change(raw)
    torch.save(raw, tmp_path / "liar.pt")
    assert needle in refusal(tmp_path / "liar.pt")
