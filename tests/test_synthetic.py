"""The synthetic dataset: Speech Commands layout and format, speaker split, determinism, safety."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kwscli.data.synthetic import (
    CONFUSABLES,
    NOISE_DIR,
    PHRASES_DIR,
    SILENCE_DIR,
    SPEECH_COMMANDS_WORDS,
    synthesize_dataset,
)
from kwscli.data.tts import random_speakers, synthesize
from kwscli.errors import ConfigError, DataError

TINY = dict(num_clips=120, seed=3, clips_per_speaker=6, noise_seconds=2)
NAME = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    calls = []
    report = synthesize_dataset(root, workers=1, progress=lambda d, t: calls.append((d, t)), **TINY)
    return root, report, calls


def clips(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*.wav") if p.parent.name != NOISE_DIR)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def speaker(rel: str) -> str:
    return rel.split("/")[1].split("_nohash_")[0]


@pytest.mark.slow
def test_every_word_folder_and_clip_count(tiny):
    root, report, _ = tiny
    folders = {p.name for p in root.iterdir() if p.is_dir()}
    expected = {
        *SPEECH_COMMANDS_WORDS,
        *CONFUSABLES["sheila"],
        PHRASES_DIR,
        NOISE_DIR,
        SILENCE_DIR,
    }
    assert folders == expected
    found = {}
    for p in clips(root):
        found[p.parent.name] = found.get(p.parent.name, 0) + 1
    assert found == report.per_word
    assert sum(found.values()) == report.clips == TINY["num_clips"]
    assert 1 <= found["sheila"] <= 0.06 * TINY["num_clips"]
    assert not [p for p in root.rglob(".*")], "temporary files left behind"


def test_clips_are_one_second_16k_mono_pcm16_with_speaker_names(tiny):
    root, _, _ = tiny
    for p in clips(root):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            16000,
            1,
            "PCM_16",
            16000,
        ), p
        assert NAME.match(p.name), p.name


def test_background_noises_are_long_and_differently_coloured(tiny):
    root, report, _ = tiny
    noises = {p.stem: sf.read(str(p), dtype="float32")[0] for p in (root / NOISE_DIR).glob("*.wav")}
    assert set(noises) == {"white_noise", "pink_noise", "brown_noise", "babble"}
    assert report.noise_files == 4
    high = {}
    for name, audio in noises.items():
        assert len(audio) == TINY["noise_seconds"] * 16000
        assert np.sqrt(np.mean(audio**2)) > 0.02, name
        power = np.abs(np.fft.rfft(audio)) ** 2
        high[name] = power[len(power) // 2 :].sum() / power.sum()  # share above 4 kHz
    assert high["white_noise"] > high["pink_noise"] > high["brown_noise"]


def test_split_lists_exist_sorted_and_disjoint_by_speaker(tiny):
    root, report, _ = tiny
    lists = {
        n: (root / n).read_text().splitlines() for n in ("validation_list.txt", "testing_list.txt")
    }
    for lines in lists.values():
        assert lines and lines == sorted(lines)
        assert all((root / rel).is_file() for rel in lines)
    val, test = ({speaker(r) for r in lines} for lines in lists.values())
    assert not val & test
    held_out = set(lists["validation_list.txt"]) | set(lists["testing_list.txt"])
    train = {str(p.relative_to(root)) for p in clips(root)} - held_out
    assert not {speaker(r) for r in train} & (val | test)
    assert (len(val), len(test)) == (report.validation, report.testing)


def test_synth_json_says_what_the_dataset_is(tiny):
    root, _, _ = tiny
    meta = json.loads((root / "SYNTH.json").read_text())
    assert meta["complete"] is True
    assert (meta["seed"], meta["num_clips"], meta["keyword"]) == (3, 120, "sheila")
    assert meta["engines"] == ["espeak"] and meta["engine_info"]["espeak"]["version"]


def test_progress_counts_up_to_the_total(tiny):
    _, _, calls = tiny
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[0] == (0, 120) and calls[-1] == (120, 120)


def test_keyword_clips_are_audible_and_differ_between_speakers(tiny):
    root, _, _ = tiny
    audio = {p.name: sf.read(str(p), dtype="float32")[0] for p in (root / "sheila").glob("*.wav")}
    for name, x in audio.items():
        assert np.sqrt(np.mean(x**2)) > 1e-3 and np.abs(x).max() > 0.03, name
    assert len({n.split("_")[0] for n in audio}) >= 2
    assert len({x.tobytes() for x in audio.values()}) == len(audio)


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_worker_count(tiny, tmp_path):
    root, _, _ = tiny
    synthesize_dataset(tmp_path / "two", workers=2, **TINY)
    assert digest(tmp_path / "two") == digest(root)


@pytest.mark.slow
def test_another_seed_gives_other_audio(tiny, tmp_path):
    root, _, _ = tiny
    other = digest(synthesize_dataset(tmp_path / "o", workers=1, **{**TINY, "seed": 4}).root)
    assert set(other.values()).isdisjoint(v for k, v in digest(root).items() if k.endswith(".wav"))


def test_refuses_a_non_empty_folder_and_never_deletes_a_foreign_one(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        synthesize_dataset(out, workers=1, **TINY)
    with pytest.raises(DataError, match="no SYNTH.json"):
        synthesize_dataset(out, workers=1, force=True, **TINY)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_force_replaces_an_earlier_synthetic_dataset(tmp_path):
    out = tmp_path / "d"
    small = {**TINY, "num_clips": 40}
    synthesize_dataset(out, workers=1, **small)
    (out / "sheila" / "stale.wav").write_bytes(b"x")
    report = synthesize_dataset(out, workers=1, force=True, **small)
    assert not (out / "sheila" / "stale.wav").exists()
    assert len(clips(out)) == report.clips == 40


@pytest.mark.slow
def test_an_interrupted_synthesis_is_remade_by_the_same_command(tmp_path):
    """Killed part-way (SYNTH.json says incomplete, its process is gone): the same command
    starts over without --force; one still being written (its process alive) is refused."""
    import json
    import subprocess

    out = tmp_path / "d"
    small = {**TINY, "num_clips": 40}
    synthesize_dataset(out, workers=1, **small)
    state = json.loads((out / "SYNTH.json").read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "SYNTH.json").write_text(json.dumps({**state, "complete": False, "pid": dead.pid}))
    (out / "sheila" / "half.wav").write_bytes(b"x")
    report = synthesize_dataset(out, workers=1, **small)
    assert not report.already_present and len(clips(out)) == 40
    (out / "SYNTH.json").write_text(json.dumps({**state, "complete": False, "pid": os.getpid()}))
    with pytest.raises(DataError, match="other settings"):
        synthesize_dataset(out, workers=1, **small)


BAD = [
    {"num_clips": 0},
    {"keyword_fraction": 0.5, "phrase_fraction": 0.6},
    {"keyword": "sh3ila"},
    {"noise_seconds": 0.5},
    {"clips_per_speaker": 0},
]


@pytest.mark.parametrize("bad", BAD)
def test_bad_settings_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError):
        synthesize_dataset(tmp_path / "x", workers=1, **{**TINY, **bad})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_synthesize_speaks_a_word_as_16k_float32():
    audio = synthesize("sheila", "en-us+f3", rate=175, pitch=50)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.2 < len(audio) / 16000 < 1.0
    assert np.abs(audio).max() > 0.05


def test_synthesize_depends_on_its_arguments_not_on_earlier_calls():
    """+caleb breathes with libc's rand(), the rest keeps state in espeak-ng's statics."""
    for voice in ("en-gb-scotland+f2", "en-us+caleb"):
        first = synthesize("sheila", voice, rate=150, pitch=60)
        synthesize("zero one two three", voice)
        assert np.array_equal(synthesize("sheila", voice, rate=150, pitch=60), first), voice
    other = synthesize("sheila", "en-us+m3", rate=150, pitch=60)
    assert len(other) != len(first) or not np.array_equal(other, first)


def test_random_speakers_are_distinct_and_seeded():
    speakers = random_speakers(50, seed=1)
    assert len({s.id for s in speakers}) == 50
    assert speakers == random_speakers(50, seed=1) != random_speakers(50, seed=2)
    assert all(re.fullmatch(r"[0-9a-f]{8}", s.id) for s in speakers)


@pytest.mark.slow
def test_cli_synth_then_rerun_is_a_no_op_and_other_settings_refuse(tmp_path: Path) -> None:
    """`kws data synth` through the CLI: same settings again do nothing; different ones need
    --force, and --force never deletes a folder that is not a synthetic dataset."""
    from typer.testing import CliRunner

    from kwscli.cli import app

    out = tmp_path / "ds"
    run = CliRunner().invoke
    first = run(app, ["data", "synth", "--out", str(out), "--clips", "40", "--workers", "1"])
    assert first.exit_code == 0, first.output
    assert len(list(out.glob("*/*.wav"))) == 40 + len(list(out.glob("_background_noise_/*")))
    stamp = (out / "SYNTH.json").stat().st_mtime_ns
    again = run(app, ["data", "synth", "--out", str(out), "--clips", "40", "--workers", "1"])
    assert again.exit_code == 0 and "already at" in again.output
    assert (out / "SYNTH.json").stat().st_mtime_ns == stamp
    other = run(app, ["data", "synth", "--out", str(out), "--clips", "50"])
    assert other.exit_code == 1 and "--force" in other.output
    foreign = tmp_path / "mine"
    (foreign / "keep").mkdir(parents=True)
    refused = run(app, ["data", "synth", "--out", str(foreign), "--force"])
    assert refused.exit_code == 1 and "not a synthetic dataset" in refused.output
    assert (foreign / "keep").is_dir()
