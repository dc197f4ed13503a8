"""A synthetic Speech-Commands-layout dataset spoken by TTS engines, for anyone without the data.

Every clip, negatives included, comes from the same engines, so a model cannot learn "TTS or not"
instead of the keyword. The layout, names and split lists copy Google Speech Commands, so the
reader of the real dataset reads this one unchanged.

Speech comes from `kwscli.data.engines` (espeak-ng by default; hibari, flite, Piper when asked):
each engine gets its own speakers, and every speaker says keyword, confusable and other words.
Clips then get acoustic variety (`kwscli.data.acoustics`: speed, EQ, band-limits, rooms) and noise
at a random SNR; a share are noise or near-silence only (the `silence` folder), the largest source
of false alarms on real audio. espeak-ng's output depends on what the loaded library said before,
so the dataset uses one fresh load per chunk of `CHUNK_CLIPS` clips: the bytes depend on the seed
and settings, never on the worker count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kwscli.audio import load_wav, write_wav
from kwscli.data import engines as tts_engines
from kwscli.data.acoustics import vary
from kwscli.data.engines import Engine, Speaker
from kwscli.data.speech_commands import keyword_folder
from kwscli.data.tts import Espeak, random_speakers
from kwscli.errors import ConfigError, DataError, KwsError
from kwscli.shapes import CLIP_SAMPLES, SAMPLE_RATE

GENERATOR_VERSION = 2
CHUNK_CLIPS = 64  # fixed, so chunk boundaries (and espeak reloads) never depend on workers
NOISE_DIR = "_background_noise_"
PHRASES_DIR = "phrases"
SILENCE_DIR = "silence"  # noise-only and near-silent clips (negatives)
PUNCTUATION = ("", "", ".", "!", "?", ",")  # carrier punctuation: changes the intonation
SILENCE_DBFS = (-75.0, -20.0)  # RMS level of a noise-only clip
_SC_WORDS = """bed bird cat dog down eight five four go happy house left marvin nine no off on one
right seven sheila six stop three tree two up wow yes zero"""
SPEECH_COMMANDS_WORDS = tuple(_SC_WORDS.split())  # v0.01
# Checked with espeak_TextToPhonemes: near "ʃˈiːlə" (feeler "fˈiːlə"), none a homophone.
_SHEILA_LIKE = (
    "she sheet shield sheen shelly sheena leila delia tequila cheetah feeler sealer keela"
)
CONFUSABLES = {"sheila": (*_SHEILA_LIKE.split(), "shale", "shilling")}
_FILLERS = """the a my is it and please turn light open door call play music what time hello okay
good morning tell me about weather today now here there very nice coffee water kitchen window phone
later again maybe never always people really little big"""
FILLER_WORDS = tuple(_FILLERS.split())  # for phrases and babble, with the words above
# English voices in espeakng-loader 0.2.4's data (lang/gmw/en*), minus en-shaw (Shavian script).
_DATASET_ARGS = """num_clips keyword seed keyword_fraction confusable_fraction phrase_fraction
clips_per_speaker noise_fraction noise_seconds silence_fraction neural_share variety
"""  # recorded in SYNTH.json
PEAK_DBFS = (-26.0, -1.0)
NOISE_RMS = 0.1
BABBLE_TALKERS = 6


@dataclass
class SynthReport:
    """What `synthesize_dataset` wrote (rendered by the CLI, never printed here)."""

    root: Path
    clips: int
    per_word: dict[str, int]
    voices: int  # distinct voices (engine + voice) among the speakers
    seconds: float
    noise_files: int
    speakers: int = 0
    validation: int = 0
    testing: int = 0
    settings: dict = field(default_factory=dict)
    already_present: bool = False  # the same settings were generated here before: nothing done
    warnings: list[str] = field(default_factory=list)  # pronunciation mismatches, missing voices
    per_engine: dict[str, int] = field(default_factory=dict)  # clips per engine

    @property
    def keyword_clips(self) -> int:
        folder = keyword_folder(str(self.settings.get("keyword", "")))
        return self.per_word.get(folder, 0)


def synthesize_dataset(
    out_dir: Path,
    num_clips: int = 2000,
    keyword: str = "sheila",
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    keyword_fraction: float = 0.04,
    confusables: Sequence[str] | None = None,
    confusable_fraction: float = 0.15,
    phrase_fraction: float = 0.10,
    clips_per_speaker: int = 20,
    noise_fraction: float = 0.8,
    snr_db: tuple[float, float] = (0.0, 30.0),
    noise_seconds: float = 60.0,
    force: bool = False,
    engines: Sequence[str] = ("espeak",),
    piper_voices: Sequence[str | Path] = (),
    keyword_phonemes: str | None = None,
    silence_fraction: float = 0.05,
    neural_share: float = 0.25,
    variety: bool = True,
) -> SynthReport:
    """Write a Speech-Commands-layout dataset of `num_clips` one-second TTS clips to `out_dir`.

    Keyword clips are `keyword_fraction` of the total, confusable words (default: built in for
    "sheila", else none) `confusable_fraction`, 2-3 word phrases without the keyword
    `phrase_fraction`, noise or near-silence only `silence_fraction`, and the Speech Commands words
    the rest. Each engine other than espeak speaks `neural_share` of the clips (espeak the rest).
    `noise_fraction` of clips get one of the generated background noises at an SNR drawn from
    `snr_db`; `variety` adds speed, EQ and room changes. Same arguments, same bytes.
    """
    started = time.perf_counter()
    keyword = keyword.strip().lower()
    settings = _check_settings(locals())
    out_dir = Path(out_dir)
    loaded = tts_engines.load_engines(settings["engines"], piper_voices)
    expected = keyword_phonemes or tts_engines.EXPECTED_PHONEMES.get(keyword)
    said = tts_engines.check_pronunciation(loaded, keyword, expected)
    if expected is None and len(said) > 1:  # no reference: the engines are compared instead
        ref = tts_engines.broad(said[0].phonemes)
        for p in said:
            p.matches, p.driven = tts_engines.broad(p.phonemes) == ref, False
    settings["keyword_phonemes"] = expected
    settings["drive"] = {
        f"{p.engine}:{p.voice}": _engine_phonemes(p.engine, expected) for p in said if p.driven
    }
    settings["engine_info"] = {e.name: e.describe() for e in loaded}
    warnings = _pronunciation_warnings(said, keyword, expected)
    for e in loaded:
        if getattr(e, "missing", None):
            warnings.append(
                f"{e.name}: voices {', '.join(e.missing)} are not installed (only "
                f"{', '.join(e.voice_names())} used)"
            )
    if not force and (done := _same_dataset(out_dir, settings)) is not None:
        done.warnings = warnings
        return done
    _prepare_out_dir(out_dir, force)
    kw_dir = keyword_folder(keyword)
    confusables = [w for w in settings["confusables"] if w != keyword]
    sc_words = [w for w in SPEECH_COMMANDS_WORDS if w != keyword]
    vocab = sorted({*sc_words, *confusables, *FILLER_WORDS} - set(keyword.split()))

    rng = np.random.default_rng([seed, 0])
    n_kw = max(1, round(num_clips * keyword_fraction)) if keyword_fraction > 0 else 0
    n_conf = min(round(num_clips * confusable_fraction) if confusables else 0, num_clips - n_kw)
    n_phr = min(round(num_clips * phrase_fraction), num_clips - n_kw - n_conf)
    n_sil = min(round(num_clips * silence_fraction), num_clips - n_kw - n_conf - n_phr)
    n_sc = num_clips - n_kw - n_conf - n_phr - n_sil
    labels = (
        [(kw_dir, keyword)] * n_kw
        + _spread(confusables, n_conf, rng)
        + [(PHRASES_DIR, _phrase(vocab, keyword, rng, 2, 3)) for _ in range(n_phr)]
        + [(SILENCE_DIR, "")] * n_sil
        + _spread(sc_words, n_sc, rng)
    )
    labels = [labels[i] for i in rng.permutation(len(labels))]
    speaker_of_clip, speakers = _cast(loaded, num_clips, settings, seed)
    jobs, taken = [], {}
    for index, (folder, text) in enumerate(labels):
        speaker = speaker_of_clip[index]
        n = taken[(speaker.id, folder)] = taken.get((speaker.id, folder), -1) + 1
        if text:
            text += PUNCTUATION[rng.integers(len(PUNCTUATION))]
        jobs.append((index, f"{folder}/{speaker.id}_nohash_{n}.wav", text, speaker))

    settings["speakers"] = len(speakers)
    _write_json(out_dir / "SYNTH.json", {**settings, "complete": False, "pid": os.getpid()})
    chunks = [jobs[i : i + CHUNK_CLIPS] for i in range(0, len(jobs), CHUNK_CLIPS)]
    tasks = [(out_dir, seed, chunk, settings, loaded) for chunk in chunks]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    with _one_torch_thread():  # as in the workers, so every float is computed the same way
        noise_paths = _write_noises(out_dir / NOISE_DIR, vocab, keyword, seed, noise_seconds)
        done = 0
        if progress:
            progress(0, num_clips)
        for count in _run_chunks(tasks, noise_paths, workers):
            done += count
            if progress:
                progress(done, num_clips)

    val, test = _split_speakers(speakers, seed)
    splits = {"validation_list.txt": val, "testing_list.txt": test}
    for name, ids in splits.items():
        lines = sorted(rel for _, rel, _, s in jobs if s.id in ids)
        (out_dir / name).write_text("".join(f"{rel}\n" for rel in lines))
    _write_json(out_dir / "SYNTH.json", {**settings, "complete": True})
    per_word: dict[str, int] = {}
    for folder, _ in labels:
        per_word[folder] = per_word.get(folder, 0) + 1
    per_engine: dict[str, int] = {}
    for s in speaker_of_clip:
        per_engine[s.engine] = per_engine.get(s.engine, 0) + 1
    return SynthReport(
        root=out_dir,
        clips=num_clips,
        per_word=dict(sorted(per_word.items())),
        voices=len({(s.engine, s.voice) for s in speakers}),
        seconds=time.perf_counter() - started,
        noise_files=len(noise_paths),
        speakers=len(speakers),
        validation=len(val),
        testing=len(test),
        settings=settings,
        warnings=warnings,
        per_engine=per_engine,
    )


def _cast(
    loaded: list[Engine], num_clips: int, settings: dict, seed: int
) -> tuple[list[Speaker], list[Speaker]]:
    """The speaker of every clip, and the speakers: each engine other than espeak speaks
    `neural_share` of the clips (espeak the rest; without espeak, equal shares), each speaker
    `clips_per_speaker` clips in a row (the labels are already shuffled)."""
    names = [e.name for e in loaded]
    neural = [n for n in names if n != "espeak"]
    share = settings["neural_share"]
    if "espeak" in names and neural:
        share = min(share, 1 / (len(neural) + 1))
        counts = {n: round(num_clips * share) for n in neural}
        counts["espeak"] = num_clips - sum(counts.values())
    else:
        counts = {n: num_clips // len(names) for n in names}
        counts[names[0]] += num_clips - sum(counts.values())
    cps = settings["clips_per_speaker"]
    of_clip: list[Speaker] = []
    everyone: list[Speaker] = []
    for i, engine in enumerate(loaded):
        n = counts[engine.name]
        if n == 0:
            continue
        cast = engine.speakers(math.ceil(n / cps), seed, i)
        everyone += cast
        of_clip += [cast[k // cps] for k in range(n)]
    return of_clip, everyone


def _engine_phonemes(engine: str, ipa: str) -> str:
    """The expected IPA in the alphabet an engine takes (hibari: misaki's letters)."""
    if engine == "flite":
        return tts_engines.ipa_to_arpabet(ipa)
    return tts_engines.to_misaki(ipa) if engine == "hibari" else ipa


def _pronunciation_warnings(said: list, keyword: str, expected: str | None) -> list[str]:
    out = []
    for p in said:
        if p.matches:
            continue
        what = f"{p.engine} ({p.voice}) says {keyword!r} as /{p.phonemes}/"
        if expected is None:
            out.append(f"{what}, unlike the first engine; give --keyword-phonemes to check")
        elif p.driven:
            out.append(f"{what}, not /{expected}/: speaking it from the expected phonemes")
        else:
            out.append(f"{what}, not /{expected}/, and cannot be driven from phonemes")
    return out


def _check_settings(args: dict) -> dict:
    """Validate the arguments; return the ones that define the dataset (for SYNTH.json)."""

    def bad(name: str, rule: str):
        return ConfigError(f"{name}={args[name]!r}: {rule}")

    if args["num_clips"] < 1:
        raise bad("num_clips", "must be ≥ 1")
    if not args["keyword"] or not all(c.isalpha() or c in " '-" for c in args["keyword"]):
        raise bad("keyword", "must be a word or words of letters (e.g. 'sheila')")
    for name in (
        "keyword_fraction",
        "confusable_fraction",
        "phrase_fraction",
        "noise_fraction",
        "silence_fraction",
        "neural_share",
    ):
        if not 0 <= args[name] <= 1:
            raise bad(name, "must be between 0 and 1")
    parts = ("keyword_fraction", "confusable_fraction", "phrase_fraction", "silence_fraction")
    if sum(args[p] for p in parts) > 1:
        raise ConfigError(" + ".join(parts) + ": must be ≤ 1")
    if args["clips_per_speaker"] < 1:
        raise bad("clips_per_speaker", "must be ≥ 1")
    if args["workers"] is not None and args["workers"] < 1:
        raise bad("workers", "must be ≥ 1")
    if args["noise_seconds"] < 1:
        raise bad("noise_seconds", "must be ≥ 1 (noise is cut into 1 s pieces)")
    if not (len(args["snr_db"]) == 2 and args["snr_db"][0] <= args["snr_db"][1]):
        raise bad("snr_db", "must be (low, high) with low ≤ high")
    confusables = args["confusables"]
    if confusables is None:
        confusables = CONFUSABLES.get(args["keyword"], ())
    names = list(args["engines"])
    if isinstance(args["engines"], str):
        names = tts_engines.parse_engines(args["engines"])
    bad_names = [n for n in names if n not in tts_engines.ENGINES]
    if not names or bad_names:
        raise bad("engines", f"expected some of {', '.join(tts_engines.ENGINES)}")
    return {
        "generator": f"kws-synth/{GENERATOR_VERSION}",
        **{n: args[n] for n in _DATASET_ARGS.split()},
        "confusables": [w.strip().lower() for w in confusables],
        "snr_db": list(args["snr_db"]),
        "chunk_clips": CHUNK_CLIPS,
        "engines": names,
    }


def _same_dataset(out_dir: Path, settings: dict) -> SynthReport | None:
    """A complete earlier dataset made with these very settings: rerunning is a no-op."""
    try:
        old = json.loads((out_dir / "SYNTH.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = json.loads(json.dumps(settings))
    if not old.get("complete") or any(old.get(k) != v for k, v in wanted.items()):
        return None
    per_word = {
        d.name: sum(1 for _ in d.glob("*.wav"))
        for d in sorted(out_dir.iterdir())
        if d.is_dir() and not d.name.startswith(("_", "."))
    }
    noises = len(list((out_dir / NOISE_DIR).glob("*.wav")))
    return SynthReport(
        out_dir,
        sum(per_word.values()),
        per_word,
        0,
        0.0,
        noises,
        speakers=old.get("speakers", 0),
        settings=old,
        already_present=True,
    )


def _interrupted(out_dir: Path) -> bool:
    """A synthetic dataset kws started and never finished (Ctrl-C, a kill), and whose process
    is gone (not one being written right now)."""
    from kwscli.files import process_alive

    try:
        state = json.loads((out_dir / "SYNTH.json").read_text())
        pid = state.get("pid")
        return state.get("complete") is False and not (pid and process_alive(int(pid)))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, expected a folder for the dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _interrupted(out_dir):
        if not force:
            what = (
                "holds a synthetic dataset made with other settings"
                if (out_dir / "SYNTH.json").is_file()
                else "already exists and is not empty"
            )
            raise DataError(
                f"{out_dir}: {what}; pick a new folder (or --force to replace an earlier "
                "synthetic dataset)"
            )
        if not (out_dir / "SYNTH.json").is_file():
            raise DataError(
                f"{out_dir}: not a synthetic dataset (no SYNTH.json); refusing to "
                "delete it, remove it yourself or pick a new folder"
            )
    if out_dir.is_dir() and any(out_dir.iterdir()):  # an earlier dataset, or an unfinished one
        shutil.rmtree(out_dir)  # of ours (nothing in it to keep)
    out_dir.mkdir(parents=True, exist_ok=True)


def _spread(words: Sequence[str], count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """`count` labels spread evenly over `words` (the remainder to a random few)."""
    order = [words[i] for i in rng.permutation(len(words))] if words else []
    return [(order[i % len(order)],) * 2 for i in range(count)] if order else []


def _phrase(
    vocab: Sequence[str], keyword: str, rng: np.random.Generator, low: int, high: int
) -> str:
    while True:
        picks = rng.integers(len(vocab), size=rng.integers(low, high + 1))
        text = " ".join(vocab[i] for i in picks)
        if f" {keyword} " not in f" {text} ":
            return text


def _split_speakers(speakers: Sequence[Speaker], seed: int) -> tuple[set[str], set[str]]:
    """~10% / ~10% of speakers for validation / testing, ranked by a seeded hash of their id."""
    ids = sorted(
        (s.id for s in speakers), key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest()
    )
    n = max(1, round(len(ids) * 0.1)) if len(ids) >= 3 else 0
    return set(ids[:n]), set(ids[n : 2 * n])


def _write_noises(
    folder: Path, vocab: Sequence[str], keyword: str, seed: int, seconds: float
) -> list[Path]:
    """White, pink and brown noise and TTS babble, each `seconds` long at NOISE_RMS."""
    n = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng([seed, 3])
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = np.inf  # no DC
    noises = {
        "white_noise": white,
        "pink_noise": np.fft.irfft(spectrum / np.sqrt(freqs), n),  # power ∝ 1/f
        "brown_noise": np.fft.irfft(spectrum / freqs, n),  # power ∝ 1/f²
        "babble": _babble(n, vocab, keyword, seed),
    }
    paths = []
    for name, audio in noises.items():
        paths.append(folder / f"{name}.wav")
        write_wav(paths[-1], audio * (NOISE_RMS / (np.sqrt(np.mean(audio**2)) + 1e-12)))
    return paths


def _babble(n: int, vocab: Sequence[str], keyword: str, seed: int) -> np.ndarray:
    """BABBLE_TALKERS overlapping talkers, each saying random phrases with short pauses."""
    rng = np.random.default_rng([seed, 4])
    talkers = random_speakers(BABBLE_TALKERS, seed + 1)
    out = np.zeros(n, np.float32)
    with Espeak() as tts:
        for s in talkers:
            at = int(rng.integers(0, SAMPLE_RATE))
            while at < n:
                speech = _trim(
                    tts.say(
                        _phrase(vocab, keyword, rng, 3, 6), s.voice, s.rate, s.pitch, s.pitch_range
                    )
                )
                if speech.size == 0:  # nothing audible came out: move on
                    at += SAMPLE_RATE // 10
                    continue
                speech = speech[: n - at] / (np.abs(speech).max() + 1e-9)
                out[at : at + len(speech)] += speech
                at += len(speech) + int(rng.integers(SAMPLE_RATE // 10, SAMPLE_RATE // 2))
    return out


def _run_chunks(tasks: list, noise_paths: list[Path], workers: int):
    """Yield the clip count of each finished chunk, from `workers` processes or this one."""
    if workers == 1:
        noises = _load_noises(noise_paths)
        for task in tasks:
            yield _render_chunk(*task, noises)
        return
    import multiprocessing as mp

    # spawn: a fork would inherit the parent's torch/OpenMP threads, which can deadlock.
    with mp.get_context("spawn").Pool(workers, _init_worker, (noise_paths,)) as pool:
        yield from pool.imap_unordered(_worker_chunk, tasks)


@contextmanager
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_WORKER_NOISES: list[np.ndarray] = []


def _init_worker(noise_paths: list[Path]) -> None:
    import torch

    torch.set_num_threads(1)  # two workers on two cores, not two × N torch threads
    _WORKER_NOISES[:] = _load_noises(noise_paths)


def _worker_chunk(task: tuple) -> int:
    return _render_chunk(*task, _WORKER_NOISES)


def _load_noises(paths: list[Path]) -> list[np.ndarray]:
    return [load_wav(p) for p in paths]  # as written (16-bit), whichever process mixes them


def _render_chunk(
    out_dir: Path, seed: int, jobs: list, settings: dict, loaded: list, noises: list[np.ndarray]
) -> int:
    """Speak, place, mix and write one chunk's clips: one session per engine (for espeak-ng a
    fresh load), the jobs of each engine in dataset order."""
    keyword = settings["keyword"]
    for engine in loaded:
        mine = [j for j in jobs if j[3].engine == engine.name]
        if not mine:
            continue
        with engine.open() as session:
            for index, rel, text, s in mine:
                rng = np.random.default_rng([seed, 2, index])
                if not text:  # the silence folder: noise or near-silence only
                    write_wav(out_dir / rel, _silence(rng, noises))
                    continue
                phonemes = None
                if text.rstrip(".!?,") == keyword:
                    phonemes = settings["drive"].get(f"{s.engine}:{s.voice}")
                    if phonemes is not None:
                        phonemes += text[len(keyword) :]
                speech = _trim(session.say(text, s, _clip_seed(seed, index), phonemes))
                if len(speech) == 0:
                    raise KwsError(f"{s.engine} produced no audio for {text!r} with {s.voice}")
                if settings["variety"]:
                    speech = vary(speech, rng)
                write_wav(out_dir / rel, _mix(speech, rng, noises, settings))
    return len(jobs)


def _clip_seed(seed: int, index: int) -> int:
    return int(np.random.default_rng([seed, 6, index]).integers(2**31))


def _silence(rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """One clip of background noise alone at a random level, or (1 in 4) near-digital silence."""
    level = 10 ** (rng.uniform(*SILENCE_DBFS) / 20)
    if not noises or rng.random() < 0.25:
        return (rng.standard_normal(CLIP_SAMPLES) * min(level, 1e-3)).astype(np.float32)
    noise = noises[rng.integers(len(noises))]
    at = int(rng.integers(0, len(noise) - CLIP_SAMPLES + 1))
    piece = noise[at : at + CLIP_SAMPLES]
    return (piece * (level / (np.sqrt(np.mean(piece**2)) + 1e-9))).astype(np.float32)


def _mix(
    speech: np.ndarray, rng: np.random.Generator, noises: list[np.ndarray], settings: dict
) -> np.ndarray:
    """Random level and place in a 1 s clip; background noise at a random SNR, some of the time."""
    if len(speech) > CLIP_SAMPLES:  # a long phrase: cut, fading out over 10 ms rather than a click
        speech = speech[:CLIP_SAMPLES].copy()
        speech[-160:] *= np.linspace(1, 0, 160, dtype=np.float32)
    speech = speech * (10 ** (rng.uniform(*PEAK_DBFS) / 20) / (np.abs(speech).max() + 1e-9))
    clip = np.zeros(CLIP_SAMPLES, np.float32)
    start = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    clip[start : start + len(speech)] = speech
    if noises and rng.random() < settings["noise_fraction"]:
        noise = noises[rng.integers(len(noises))]
        at = int(rng.integers(0, len(noise) - CLIP_SAMPLES + 1))
        piece = noise[at : at + CLIP_SAMPLES]
        gain = np.sqrt(np.mean(speech**2)) / (np.sqrt(np.mean(piece**2)) + 1e-9)
        clip += piece * (gain * 10 ** (-rng.uniform(*settings["snr_db"]) / 20))
    return clip


def _trim(audio: np.ndarray, rel: float = 0.02, pad: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Cut espeak's edge silences (below `rel` × peak), keeping `pad` samples on each side."""
    loud = np.flatnonzero(np.abs(audio) > rel * np.abs(audio).max()) if len(audio) else []
    if len(loud) == 0:
        return audio[:0]
    return audio[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
