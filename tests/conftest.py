"""Shared fixtures: tiny generated datasets in the Speech Commands layout, the real mini sample."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech_commands_mini"
SR = 16_000


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Feature caches go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("KWS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kws-cache"))


def tone_clip(rng: np.random.Generator, keyword: bool) -> np.ndarray:
    """A learnable toy task: keyword clips carry a rising chirp, others a random steady tone."""
    t = np.arange(int(SR * rng.uniform(0.5, 1.0))) / SR
    if keyword:
        f0 = rng.uniform(600, 900)
        sig = np.sin(2 * np.pi * (f0 * t + 900 * t**2))
    else:
        sig = np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
    sig = 0.3 * sig + 0.02 * rng.standard_normal(len(t))
    return sig.astype(np.float32)


def make_dataset(
    root: Path,
    words: dict[str, int],
    seed: int = 0,
    keyword: str = "sheila",
    lists: bool = True,
    noise: bool = True,
) -> Path:
    """Write <word>/<speaker>_nohash_<n>.wav clips plus split lists (every 5th speaker → val,
    every 7th → test) and a _background_noise_ folder."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for word, count in words.items():
        (root / word).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            speaker = f"{i:08x}"
            rel = f"{word}/{speaker}_nohash_0.wav"
            sf.write(root / rel, tone_clip(rng, word == keyword), SR, subtype="PCM_16")
            if i % 5 == 1:
                val.append(rel)
            elif i % 7 == 2:
                test.append(rel)
    if lists:
        (root / "validation_list.txt").write_text("\n".join(sorted(val)) + "\nabsent/x.wav\n")
        (root / "testing_list.txt").write_text("\n".join(sorted(test)) + "\n")
    if noise:
        (root / "_background_noise_").mkdir(exist_ok=True)
        sf.write(
            root / "_background_noise_" / "white.wav",
            (0.1 * rng.standard_normal(3 * SR)).astype(np.float32),
            SR,
            subtype="PCM_16",
        )
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """60 keyword + 120 other clips; enough for a teacher to learn the toy task in a few epochs."""
    root = tmp_path_factory.mktemp("tiny") / "ds"
    return make_dataset(root, {"sheila": 60, "yes": 60, "no": 60})


@pytest.fixture
def mini_dataset() -> Path:
    """The real Speech Commands sample beside the project; tests using it skip where it's absent."""
    if not MINI.is_dir():
        pytest.skip(f"real mini sample not found at {MINI}")
    return MINI


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_dataset) -> Path:
    """A tiny teacher trained once through the real CLI, reused by evaluate tests."""
    from typer.testing import CliRunner

    from kwscli.cli import app

    runs = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(
        app,
        tiny_teacher_args(tiny_dataset, runs, "t"),
        env={"KWS_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "kws-cache")},
    )
    assert res.exit_code == 0, res.output
    return runs / "t" / "model.pt"


def tiny_teacher_args(data: Path, runs: Path, name: str) -> list[str]:
    """`kws teacher` learning the tiny dataset's toy task in 3 short epochs."""
    return ["teacher", "--data", str(data), "--runs-dir", str(runs), "--name", name,
            "--epochs", "3", "--batch-size", "32", "--hidden-size", "16", "--seed", "0",
            "--lr", "3e-3", "--epoch-size", "640"]  # fmt: skip


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, as in a terminal (a job started in the background with `&`
    inherits SIGINT ignored)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def pytest_configure(config):
    os.environ.setdefault("MPLBACKEND", "Agg")


# Tests that need a trained model (a teacher trained through the CLI, ~5 s once, then whole
# commands on it) are slow: the quick subset (`pytest -m "not slow"`) is the unit level.
NEEDS_TRAINING = {"trained_teacher"}


def pytest_collection_modifyitems(items):
    for item in items:
        if NEEDS_TRAINING & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# A Python preamble for `python -c` tests of the torch-free path: torch, torchaudio and thop
# made unimportable, as in an environment that never installed them.
WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "thop"):
            raise ImportError(f"no module named {name!r} (blocked)")
sys.meta_path.insert(0, NoTorch())
"""
