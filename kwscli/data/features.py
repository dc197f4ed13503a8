"""Log-mel features computed once per dataset and cached on disk.

Computing log-mels from wavs every batch costs several times the model's own forward+backward on
a CPU, so each clip's log-mel (and its waveform power, which noise mixing needs) is computed once
and stored in one tensor file keyed by the feature settings and the exact file list. Later runs
memory-map it. Unreadable clips are skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kwscli.audio import fit_clip, load_wav
from kwscli.config import FeatureConfig
from kwscli.data.speech_commands import DatasetIndex
from kwscli.errors import AudioError, DataError, KwsError
from kwscli.files import atomic_torch_save
from kwscli.models.frontend import log_mel, mel_power

CACHE_VERSION = 1
SILENT_POWER = 1e-10  # mean square below this (-100 dBFS) is silence: no noise to mix in
NOISE_CROPS = 512  # 1-s crops of _background_noise_ kept as mel power for augmentation
Progress = Callable[[int, int], None]


@dataclass
class FeatureSet:
    """Log-mels of every readable clip of a dataset, aligned with `paths`."""

    features: torch.Tensor  # (N, n_mels, T) float32 log-mel
    energy: torch.Tensor  # (N,) mean waveform power of each clip
    labels: torch.Tensor  # (N,) int64
    paths: list[str]
    skipped: list[str] = field(default_factory=list)  # unreadable files, with the reason
    noise_power: torch.Tensor | None = None  # (K, n_mels, T) mel power of background-noise crops
    noise_energy: torch.Tensor | None = None  # (K,)
    cache_file: Path | None = None

    def subset(self, wanted: list[str]) -> torch.Tensor:
        """Row indices of `wanted` paths that are present (unreadable ones drop out)."""
        pos = {p: i for i, p in enumerate(self.paths)}
        return torch.tensor([pos[p] for p in wanted if p in pos], dtype=torch.long)


def default_cache_dir() -> Path:
    env = os.environ.get("KWS_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kws" / "features"


def cache_key(index: DatasetIndex, features: FeatureConfig) -> str:
    """Hash of the feature settings, the dataset root and every file's name, size and mtime."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "v": CACHE_VERSION,
                "features": features.model_dump(mode="json"),
                "root": str(index.root.resolve()),
            },
            sort_keys=True,
        ).encode()
    )
    for rel in [*index.paths, *(f"{n.parent.name}/{n.name}" for n in index.noise_files)]:
        st = (index.root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_features(
    index: DatasetIndex,
    features: FeatureConfig,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> FeatureSet:
    """Cached log-mels of every clip in `index` (computed and stored on first use)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    file = cache_dir / f"{index.root.name}-{cache_key(index, features)}.pt"
    if file.is_file():
        try:
            return _read_cache(file)
        except Exception:
            file.unlink(missing_ok=True)  # a stale or damaged cache is rebuilt, never trusted
    fs = compute_features(index, features, progress)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(_as_dict(fs), file)
        fs.cache_file = file
    except (OSError, RuntimeError, KwsError):
        pass  # an unwritable or full cache folder only costs time on the next run
    return fs


def compute_features(
    index: DatasetIndex, features: FeatureConfig, progress: Progress | None = None, chunk: int = 512
) -> FeatureSet:
    n = len(index.paths)
    paths: list[str] = []
    feats, energies, skipped = [], [], []

    def read(rel: str):
        try:
            return fit_clip(load_wav(index.root / rel, features.sample_rate), features.clip_samples)
        except AudioError as exc:
            return str(exc)

    # soundfile releases the GIL while decoding, so threads overlap reading with log-mel maths
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, n, chunk):
            rels = index.paths[start : start + chunk]
            waves = []
            for rel, wav in zip(rels, pool.map(read, rels), strict=True):
                if isinstance(wav, str):
                    skipped.append(wav)
                else:
                    paths.append(rel)
                    waves.append(wav)
            if waves:
                batch = torch.from_numpy(np.stack(waves))  # (B, samples)
                with torch.no_grad():
                    feats.append(log_mel(batch, features))  # (B, n_mels, T)
                energies.append(batch.pow(2).mean(dim=1))
            if progress:
                progress(min(start + chunk, n), n)
    if not paths:
        raise DataError(f"none of the {n} wav files under {index.root} could be read")
    pos = {p: i for i, p in enumerate(index.paths)}
    labels = torch.from_numpy(index.labels[[pos[p] for p in paths]])
    noise_power, noise_energy = noise_bank(index.noise_files, features)
    return FeatureSet(
        torch.cat(feats), torch.cat(energies), labels, paths, skipped, noise_power, noise_energy
    )


def noise_bank(
    files: list[Path], features: FeatureConfig, crops: int = NOISE_CROPS, seed: int = 0
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Mel power and waveform power of `crops` random 1-clip crops of the background noises."""
    waves = []
    for f in files:
        try:
            w = load_wav(f, features.sample_rate)
        except AudioError:
            continue
        if len(w) >= features.clip_samples and np.abs(w).max() > 0:
            waves.append(w)
    if not waves:
        return None, None
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(crops * 20):  # a file may be mostly digital silence: draw again
        w = waves[rng.integers(len(waves))]
        start = rng.integers(0, len(w) - features.clip_samples + 1)
        crop = w[start : start + features.clip_samples]
        if np.mean(crop.astype(np.float64) ** 2) > SILENT_POWER:
            picks.append(crop)
            if len(picks) == crops:
                break
    if not picks:
        return None, None
    batch = torch.from_numpy(np.stack(picks))
    with torch.no_grad():
        power = mel_power(batch, features)
    return power, batch.pow(2).mean(dim=1)


def _as_dict(fs: FeatureSet) -> dict:
    return {
        "version": CACHE_VERSION,
        "features": fs.features,
        "energy": fs.energy,
        "labels": fs.labels,
        "paths": fs.paths,
        "skipped": fs.skipped,
        "noise_power": fs.noise_power,
        "noise_energy": fs.noise_energy,
    }


def _read_cache(file: Path) -> FeatureSet:
    d = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    if d.get("version") != CACHE_VERSION:
        raise ValueError("old cache version")
    return FeatureSet(
        d["features"],
        d["energy"],
        d["labels"],
        d["paths"],
        d["skipped"],
        d["noise_power"],
        d["noise_energy"],
        cache_file=file,
    )
