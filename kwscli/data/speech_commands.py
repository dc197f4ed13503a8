"""Read a dataset in the Speech Commands layout (real v0.01/v0.02 or `kws data synth` output).

Layout: `<root>/<word>/<speaker>_nohash_<n>.wav`; label 1 for the keyword folder, 0 for every other
word; `_background_noise_/` holds long noise files used only for augmentation; the test sets'
`_silence_/` and `_unknown_/` folders are negatives like any other word; any other folder starting
with `_` or `.` is skipped and listed in `DatasetIndex.skipped_dirs`. Splits follow the
official `validation_list.txt` / `testing_list.txt` (by speaker), or the course's seeded
random 80/20.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwscli.errors import DataError

NOISE_DIR = "_background_noise_"
NEGATIVE_DIRS = ("_silence_", "_unknown_")  # folders of the real test sets, read as negatives
SPLITS = ("train", "val", "test")


@dataclass
class DatasetIndex:
    """Every clip of a dataset (relative paths, sorted) with labels and split membership."""

    root: Path
    keyword: str
    paths: list[str]
    labels: np.ndarray  # (N,) int64, 1 = keyword
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # split name → clip indices
    noise_files: list[Path] = field(default_factory=list)
    missing_listed: int = 0  # files named in the split lists but absent (tolerated)
    skipped_dirs: list[str] = field(default_factory=list)  # folders not read (reported)

    def words(self) -> list[str]:
        return sorted({p.split("/", 1)[0] for p in self.paths})

    def split_counts(self) -> dict[str, tuple[int, int]]:
        """split → (clips, keyword clips)."""
        return {k: (len(v), int(self.labels[v].sum())) for k, v in self.splits.items()}


def keyword_folder(keyword: str) -> str:
    """The folder a keyword's clips live in: `hey jarvis` → `hey_jarvis/` (kws data synth)."""
    return keyword.strip().replace(" ", "_")


def scan_dataset(
    root: str | Path,
    keyword: str,
    split: str = "official",
    seed: int = 0,
    val_fraction: float = 0.2,
) -> DatasetIndex:
    """Index the wavs under `root` and assign each to train/val(/test). The keyword's clips are
    in `keyword_folder(keyword)`."""
    root = Path(root)
    keyword = keyword_folder(keyword)
    if not root.exists():
        raise DataError(
            f"{root}: dataset folder not found: pass --data DIR (a <word>/*.wav folder; "
            "`kws data synth` makes one)"
        )
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a dataset root with <word>/*.wav)")
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    word_dirs = [d for d in dirs if not d.name.startswith(("_", ".")) or d.name in NEGATIVE_DIRS]
    skipped_dirs = [d.name for d in dirs if d not in word_dirs and d.name != NOISE_DIR]
    paths: list[str] = []
    for d in word_dirs:
        paths.extend(f"{d.name}/{f.name}" for f in sorted(d.glob("*.wav")) if f.is_file())
    if not paths:
        raise DataError(f"no wav files under {root} (expected <word>/*.wav)")
    words = sorted({p.split("/", 1)[0] for p in paths})
    if keyword not in words:
        shown = ", ".join(words[:12]) + (", ..." if len(words) > 12 else "")
        raise DataError(f"keyword {keyword!r} is not a folder in {root} (words: {shown})")
    labels = np.array([p.split("/", 1)[0] == keyword for p in paths], dtype=np.int64)
    noise_dir = root / NOISE_DIR
    noise = sorted(noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
    index = DatasetIndex(root, keyword, paths, labels, noise_files=noise, skipped_dirs=skipped_dirs)
    if split == "official":
        _official_split(index)
    elif split == "random":
        _random_split(index, seed, val_fraction)
    else:
        raise DataError(f"unknown split {split!r}: use 'official' or 'random'")
    index.splits["all"] = np.arange(len(paths))  # the whole dataset as one test set
    return index


def _official_split(index: DatasetIndex) -> None:
    lists = {}
    for name, file in (("val", "validation_list.txt"), ("test", "testing_list.txt")):
        path = index.root / file
        if not path.is_file():
            raise DataError(
                f"{path}: split list not found; this dataset needs the random split "
                "(data.split: random, or --split random when training)"
            )
        lists[name] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    position = {p: i for i, p in enumerate(index.paths)}
    assigned = np.zeros(len(index.paths), dtype=np.int8)  # 0 train, 1 val, 2 test
    for code, name in ((1, "val"), (2, "test")):
        present = [position[p] for p in lists[name] if p in position]
        index.missing_listed += len(lists[name]) - len(present)
        assigned[present] = code
    index.splits = {name: np.flatnonzero(assigned == code) for code, name in enumerate(SPLITS)}


def _random_split(index: DatasetIndex, seed: int, val_fraction: float) -> None:
    """The course's split: a seeded random permutation, 80/20 train/val, no test set."""
    order = np.random.default_rng(seed).permutation(len(index.paths))
    n_val = int(round(len(order) * val_fraction))
    index.splits = {
        "train": np.sort(order[n_val:]),
        "val": np.sort(order[:n_val]),
        "test": np.array([], dtype=np.int64),
    }
