"""Long synthetic recordings: other speech over background noise, with the keyword said at known
times (or never, for measuring false alarms per hour). Written to disk minute by minute, so an
hour needs no more memory than a minute."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from kwscli.audio import SAMPLE_RATE
from kwscli.data.synthetic import FILLER_WORDS, SPEECH_COMMANDS_WORDS, _phrase
from kwscli.data.tts import Espeak, Speaker, english_variants, random_speakers
from kwscli.files import atomic_write

SEGMENT_S = 60.0


@dataclass
class Event:
    start: float
    end: float
    text: str
    keyword: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "start": round(self.start, 3), "end": round(self.end, 3)}


def make_recording(
    out: Path,
    seconds: float,
    keyword: str = "sheila",
    keyword_times: tuple[float, ...] = (),
    seed: int = 0,
    snr_db: float = 15.0,
    speech_fraction: float = 0.6,
    clear_keyword: bool = False,
) -> list[Event]:
    """Write `seconds` of pink noise with TTS phrases (never containing the keyword) over it, plus
    the keyword spoken starting at each of `keyword_times`. Returns every spoken event.

    `clear_keyword`: the keyword is said by plain voices (no whisper, croak or extreme rate) at
    a conversational level, as in a demo recording; otherwise by any speaker at any level."""
    rng = np.random.default_rng([seed, 11])
    speakers = random_speakers(24, seed + 1000)
    kw_speakers = plain_speakers(8, seed + 2000) if clear_keyword else speakers
    vocab = sorted({*SPEECH_COMMANDS_WORDS, *FILLER_WORDS} - {keyword})
    total = int(seconds * SAMPLE_RATE)
    events: list[Event] = []
    with (
        Espeak() as tts,
        atomic_write(out) as tmp,
        sf.SoundFile(str(tmp), "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as f,
    ):
        placed_kw = sorted(keyword_times)
        for seg_start in range(0, total, int(SEGMENT_S * SAMPLE_RATE)):
            n = min(int(SEGMENT_S * SAMPLE_RATE), total - seg_start)
            speech = np.zeros(n, np.float32)
            t0 = seg_start / SAMPLE_RATE
            busy = [(k - 0.4, k + 1.2) for k in placed_kw]  # keep other speech off the keyword
            t = t0 + rng.uniform(0.2, 1.5)
            while t < t0 + n / SAMPLE_RATE:
                s = speakers[rng.integers(len(speakers))]
                text = _phrase(vocab, keyword, rng, 1, 4)
                audio = tts.say(text, s.voice, s.rate, s.pitch, s.pitch_range)
                dur = len(audio) / SAMPLE_RATE
                if not any(a < t + dur and t < b for a, b in busy):
                    _add(speech, audio * _level(rng), t - t0)
                    events.append(Event(t, t + dur, text, False))
                gap = dur * (1 - speech_fraction) / speech_fraction
                t += dur + rng.uniform(0.5, 1.5) * gap + 0.2
            for k in placed_kw:
                if t0 <= k < t0 + n / SAMPLE_RATE:
                    s = kw_speakers[rng.integers(len(kw_speakers))]
                    audio = tts.say(keyword, s.voice, s.rate, s.pitch, s.pitch_range)
                    level = _level(rng, (-12.0, -8.0) if clear_keyword else (-20.0, -8.0))
                    _add(speech, audio * level, k - t0)
                    events.append(Event(k, k + len(audio) / SAMPLE_RATE, keyword, True))
            rms = np.sqrt(np.mean(speech[speech != 0] ** 2)) if np.any(speech) else 0.05
            noise = pink_noise(n, rng) * rms / 10 ** (snr_db / 20)
            f.write(np.clip(speech + noise, -1, 1))
    return sorted(events, key=lambda e: e.start)


def _add(buf: np.ndarray, audio: np.ndarray, at: float) -> None:
    i = int(at * SAMPLE_RATE)
    j = min(len(buf), i + len(audio))
    if i < j:
        buf[i:j] += audio[: j - i]


def _level(rng: np.random.Generator, db: tuple[float, float] = (-20.0, -8.0)) -> float:
    return float(10 ** (rng.uniform(*db) / 20)) / 0.5  # espeak peaks near 0.5


def plain_speakers(count: int, seed: int) -> list[Speaker]:
    """Ordinary voices: main accents, numbered male/female variants, middling rate and pitch."""
    rng = np.random.default_rng([seed, 12])
    variants = [v for v in english_variants() if v[:1] in "mf" and v[1:].isdigit()]
    return [
        Speaker(
            ("en", "en-us", "en-gb-x-rp")[rng.integers(3)],
            variants[rng.integers(len(variants))],
            int(rng.integers(150, 191)),
            int(rng.integers(35, 66)),
        )
        for _ in range(count)
    ]


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power ∝ 1/f."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = np.inf
    out = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (out / (np.sqrt(np.mean(out**2)) + 1e-12)).astype(np.float32)


def stream_from_clips(
    root: Path,
    keyword: str,
    out: Path,
    seed: int = 0,
    gap_s: tuple[float, float] = (0.3, 1.5),
    noise_dbfs: float = -60.0,
) -> list[Event]:
    """A continuous recording of every clip of a Speech-Commands-layout dataset (real voices):
    the clips in a seeded random order, separated by gaps of faint pink noise, so the keyword
    clips sit at known times among the other words and silence. Returns one event per clip
    (`keyword` True for the keyword folder's clips), placed where the clip's audio is."""
    from kwscli.audio import load_wav
    from kwscli.data.speech_commands import scan_dataset

    index = scan_dataset(root, keyword, "random")
    rng = np.random.default_rng([seed, 13])
    order = rng.permutation(len(index.paths))
    events: list[Event] = []
    noise_rms = 10 ** (noise_dbfs / 20)
    t = 0
    with (
        atomic_write(out) as tmp,
        sf.SoundFile(str(tmp), "w", SAMPLE_RATE, 1, "PCM_16", format="WAV") as f,
    ):
        for i in order:
            gap = int(rng.uniform(*gap_s) * SAMPLE_RATE)
            f.write(pink_noise(gap, rng) * noise_rms)
            t += gap
            clip = load_wav(index.root / index.paths[i], SAMPLE_RATE)
            f.write(np.clip(clip + pink_noise(len(clip), rng) * noise_rms, -1, 1))
            events.append(
                Event(t / SAMPLE_RATE, (t + len(clip)) / SAMPLE_RATE, index.paths[i],
                      bool(index.labels[i]))
            )  # fmt: skip
            t += len(clip)
        f.write(pink_noise(SAMPLE_RATE, rng) * noise_rms)
    return events


@dataclass
class StreamScore:
    found: int
    missed: int
    false_alarms: int
    hours: float

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.hours if self.hours else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "false_alarms_per_hour": self.false_alarms_per_hour}


def score_stream(
    detection_times: list[float], events: list[Event], seconds: float, slack: float = 0.5
) -> StreamScore:
    """Match detections to the keyword events: a detection within an event's span (± `slack`
    s) finds it; any other detection, a second one on the same event included, is a false
    alarm."""
    keywords = [e for e in events if e.keyword]
    hit = [False] * len(keywords)
    false_alarms = 0
    for t in detection_times:
        match = next(
            (i for i, e in enumerate(keywords) if e.start - slack <= t <= e.end + slack), None
        )
        if match is None or hit[match]:
            false_alarms += 1
        else:
            hit[match] = True
    found = sum(hit)
    return StreamScore(found, len(keywords) - found, false_alarms, seconds / 3600)
