"""Dataset indexing: labels, words, the official split from its lists, the seeded random split, the
errors a user can hit, and the real Speech Commands mini sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kwscli.data.speech_commands import scan_dataset
from kwscli.errors import DataError
from tests.conftest import make_dataset

WORDS = {"sheila": 10, "yes": 12, "no": 8}


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("sc") / "ds", WORDS)


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


# ---------------------------------------------------------------- index


def test_scan_lists_every_clip_with_keyword_label(small_ds):
    index = scan_dataset(small_ds, "sheila")
    on_disk = sorted(
        p.relative_to(small_ds).as_posix()
        for p in small_ds.glob("*/*.wav")
        if not p.parent.name.startswith("_")
    )
    assert index.paths == on_disk
    assert len(index.paths) == sum(WORDS.values())
    for path, label in zip(index.paths, index.labels, strict=True):
        assert label == (1 if path.startswith("sheila/") else 0)
    assert index.labels.dtype == np.int64 and index.labels.sum() == WORDS["sheila"]
    assert index.words() == ["no", "sheila", "yes"]
    assert [p.name for p in index.noise_files] == ["white.wav"]


def test_other_keyword_flips_the_labels(small_ds):
    index = scan_dataset(small_ds, "yes")
    assert index.labels.sum() == WORDS["yes"]


def test_official_split_follows_the_lists(small_ds):
    index = scan_dataset(small_ds, "sheila", split="official")
    val = read_list(small_ds / "validation_list.txt")
    test = read_list(small_ds / "testing_list.txt")
    names = {k: {index.paths[i] for i in v} for k, v in index.splits.items()}
    assert names["val"] == val & set(index.paths)
    assert names["test"] == test & set(index.paths)
    assert names["train"] == set(index.paths) - val - test
    assert names["all"] == set(index.paths)
    assert index.missing_listed == 1  # the lists name absent/x.wav
    counts = index.split_counts()
    assert sum(counts[k][0] for k in ("train", "val", "test")) == len(index.paths)


def test_random_split_is_seeded_disjoint_and_80_20(small_ds):
    a = scan_dataset(small_ds, "sheila", split="random", seed=3)
    b = scan_dataset(small_ds, "sheila", split="random", seed=3)
    c = scan_dataset(small_ds, "sheila", split="random", seed=4)
    n = len(a.paths)
    assert len(a.splits["val"]) == round(0.2 * n) and len(a.splits["train"]) == n - round(0.2 * n)
    assert len(a.splits["test"]) == 0
    assert not set(a.splits["train"]) & set(a.splits["val"])
    assert set(a.splits["train"]) | set(a.splits["val"]) == set(range(n))
    for k in ("train", "val"):
        np.testing.assert_array_equal(a.splits[k], b.splits[k])
    assert not np.array_equal(a.splits["val"], c.splits["val"])
    assert a.missing_listed == 0


def test_random_split_honours_val_fraction(small_ds):
    index = scan_dataset(small_ds, "sheila", split="random", val_fraction=0.5)
    assert len(index.splits["val"]) == len(index.paths) // 2


def test_all_split_is_every_clip(small_ds):
    index = scan_dataset(small_ds, "sheila", split="random")
    np.testing.assert_array_equal(index.splits["all"], np.arange(len(index.paths)))


def test_random_split_needs_no_lists(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"sheila": 3, "yes": 3}, lists=False, noise=False)
    index = scan_dataset(ds, "sheila", split="random")
    assert len(index.paths) == 6 and index.noise_files == []


# ---------------------------------------------------------------- errors


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        scan_dataset(tmp_path / "nowhere", "sheila")


def test_a_file_instead_of_a_folder_is_a_data_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        scan_dataset(tmp_path / "f", "sheila")


def test_folder_without_wavs_is_a_data_error(tmp_path):
    (tmp_path / "ds" / "sheila").mkdir(parents=True)
    (tmp_path / "ds" / "sheila" / "notes.txt").write_text("no audio")
    with pytest.raises(DataError, match=r"no wav files under .*<word>/\*\.wav"):
        scan_dataset(tmp_path / "ds", "sheila")


def test_unknown_keyword_lists_the_words(small_ds):
    with pytest.raises(DataError) as info:
        scan_dataset(small_ds, "marvin")
    assert "'marvin'" in str(info.value) and "no, sheila, yes" in str(info.value)


def test_official_split_without_lists_suggests_random(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"sheila": 2, "yes": 2}, lists=False, noise=False)
    with pytest.raises(DataError, match="validation_list.txt.*--split random"):
        scan_dataset(ds, "sheila", split="official")


def test_unknown_split_is_a_data_error(small_ds):
    with pytest.raises(DataError, match="unknown split 'speaker'"):
        scan_dataset(small_ds, "sheila", split="speaker")


# ---------------------------------------------------------------- the real mini sample


def test_mini_sample_counts(mini_dataset):
    index = scan_dataset(mini_dataset, "sheila")
    clips = [p for p in mini_dataset.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    assert len(clips) == 330
    assert len(index.paths) == 330
    assert int(index.labels.sum()) == 10
    assert all(index.paths[i].startswith("sheila/") for i in np.flatnonzero(index.labels))
    assert len(index.noise_files) == 6


def test_mini_sample_official_split_follows_its_lists(mini_dataset):
    index = scan_dataset(mini_dataset, "sheila")
    assert len(index.splits["val"]) > 0 and len(index.splits["test"]) > 0
    val = read_list(mini_dataset / "validation_list.txt")
    test = read_list(mini_dataset / "testing_list.txt")
    for name, members in index.splits.items():
        for i in members:
            p = index.paths[i]
            expected = "val" if p in val else "test" if p in test else "train"
            assert name in (expected, "all"), p
    # the lists describe the full dataset; most of their entries are absent from the sample
    present = len((val | test) & set(index.paths))
    assert index.missing_listed == len(val) + len(test) - present
