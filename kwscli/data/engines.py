"""Speech engines behind one small interface, for `kws data synth --engines espeak,hibari,piper`.

An engine knows its voices, draws synthetic speakers (a voice plus a speaking style), says how it
would pronounce a word (IPA), and opens a session that speaks text as float32 mono at 16 kHz.

- espeak: espeak-ng through espeakng-loader (8 English accents x every human-sounding variant).
- hibari: hibari-tts (Apache-2.0, distilled from Kokoro-82M); every voice present offline. Its
  speakers vary speed, pitch (f0 scaled before the vocoder) and formants (a resample).
- piper: piper-tts voices given as `.onnx` files (`--piper-voice PATH`, repeatable); every speaker
  of a multi-speaker voice.
- flite: CMU Flite's program (BSD-style licence; a system package: `apt-get install flite`), its
  English voices kal, kal16, awb, rms and slt, with speed, pitch and formant changes.

The neural engines are optional installs (`pip install "kws[voices]"`), imported only here and only
by `kws data synth`: detection, evaluation and training never load them (espeak-ng and piper-tts
are GPL; the models kws trains are not derived works of their code).

Pronunciation: `check_pronunciation` compares each engine's phonemes for the keyword with the
expected ones; an engine that differs is driven from the expected phonemes where it can be
(hibari, piper) and always reported.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kwscli.data import tts as espeak_ng
from kwscli.data.tts import resample_to_16k as resample
from kwscli.errors import ConfigError, KwsError

ENGINES = ("espeak", "hibari", "piper", "flite")
VOICES_EXTRA = 'pip install "kws[voices]"'
# The keyword's expected pronunciation (IPA), for the built-in keyword.
EXPECTED_PHONEMES = {"sheila": "ʃˈiːlə"}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an engine, one of its voices and a style, fixed for life."""

    engine: str
    voice: str
    style: tuple[float, ...]  # engine-specific: espeak (rate, pitch, range); hibari (speed, ...)

    @property
    def id(self) -> str:
        """8 hex digits, like the real dataset's speaker hashes (espeak's ids as before)."""
        engine = () if self.engine == "espeak" else (self.engine,)
        return espeak_ng.speaker_id(*engine, self.voice, *self.style)


# ---------------------------------------------------------------- phonemes


_DIPHTHONGS = {"eɪ": "A", "aɪ": "I", "oʊ": "O", "əʊ": "Q", "aʊ": "W", "ɔɪ": "Y"}
_BROAD = {"ɚ": "əɹ", "ɝ": "ɜɹ", "ɐ": "ə", "ᵻ": "ɪ", "ɾ": "t", "ʤ": "dʒ", "ʧ": "tʃ", "r": "ɹ"}


def broad(ipa: str) -> str:
    """A broad form for comparing pronunciations: no stress, length or tie marks, misaki's
    one-letter diphthongs spelled out, r-coloured vowels split, spaces and punctuation gone."""
    text = unicodedata.normalize("NFC", ipa)
    for misaki, ipa_form in (("A", "eɪ"), ("I", "aɪ"), ("O", "oʊ"), ("Q", "əʊ"), ("W", "aʊ")):
        text = text.replace(misaki, ipa_form)
    text = text.replace("Y", "ɔɪ").replace("ᵊ", "ə")
    for a, b in _BROAD.items():
        text = text.replace(a, b)
    return "".join(c for c in text if c.isalpha() and c not in "ːˑˈˌ")


def to_misaki(ipa: str) -> str:
    """IPA to hibari's (misaki's) alphabet: one letter per diphthong, no length marks."""
    text = ipa.replace("ː", "").replace("dʒ", "ʤ").replace("tʃ", "ʧ")
    for ipa_form, letter in _DIPHTHONGS.items():
        text = text.replace(ipa_form, letter)
    return text


@dataclass
class Pronunciation:
    engine: str
    voice: str
    phonemes: str  # what the engine says on its own
    matches: bool
    driven: bool  # the engine speaks the expected phonemes instead


def check_pronunciation(
    engines: Sequence[Engine], keyword: str, expected: str | None
) -> list[Pronunciation]:
    """Each engine voice's phonemes for `keyword` against `expected` (IPA; None: not checked)."""
    out = []
    for engine in engines:
        for voice in engine.voice_names():
            said = engine.phonemes(keyword, voice)
            ok = expected is None or broad(said) == broad(expected)
            driven = not ok and engine.can_take_phonemes
            out.append(Pronunciation(engine.name, voice, said, ok, driven))
    return out


# ---------------------------------------------------------------- engines


class Engine:
    """The interface: voices, speakers, phonemes, and `open()` for a speaking session."""

    name = ""
    can_take_phonemes = False

    def voice_names(self) -> list[str]:
        raise NotImplementedError

    def speakers(self, count: int, seed: int, stream: int) -> list[Speaker]:
        """`count` distinct speakers drawn from `seed`; `stream` (the engine's place among those
        asked for) keeps two engines' draws apart."""
        rng = np.random.default_rng([seed, 5, stream])
        out: dict[str, Speaker] = {}
        while len(out) < count:
            s = self.draw_speaker(rng)
            out.setdefault(s.id, s)
        return list(out.values())

    def draw_speaker(self, rng: np.random.Generator) -> Speaker:
        """One random speaker of this engine (a voice and a style)."""
        raise NotImplementedError

    def phonemes(self, word: str, voice: str) -> str:
        raise NotImplementedError

    def open(self) -> Session:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the dataset's SYNTH.json records about this engine (versions, voices)."""
        return {"voices": self.voice_names()}


class Session:
    """`with engine.open() as s: s.say(text, speaker, seed, phonemes)`: float32 at 16 kHz."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None: ...

    def say(
        self, text: str, speaker: Speaker, seed: int, phonemes: str | None = None
    ) -> np.ndarray:
        raise NotImplementedError


class EspeakEngine(Engine):
    name = "espeak"

    def voice_names(self) -> list[str]:
        return ["en-us"]  # one pronunciation check stands for the accents (they share rules)

    def speakers(self, count: int, seed: int, stream: int) -> list[Speaker]:
        return [  # the same espeak speakers as before engines existed: `stream` unused
            Speaker("espeak", s.voice, (s.rate, s.pitch, s.pitch_range))
            for s in espeak_ng.random_speakers(count, seed)
        ]

    def phonemes(self, word: str, voice: str) -> str:
        return espeak_ng.text_to_ipa(word, voice)

    def open(self) -> Session:
        return _EspeakSession()

    def describe(self) -> dict:
        with espeak_ng.Espeak() as tts:
            version = tts.version
        return {
            "version": version,
            "accents": list(espeak_ng.ACCENTS),
            "variants": espeak_ng.english_variants(),
        }


class _EspeakSession(Session):
    def __enter__(self) -> Session:
        self._ctx = espeak_ng.Espeak()
        self._tts = self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def say(self, text, speaker, seed, phonemes=None):
        rate, pitch, pitch_range = (int(v) for v in speaker.style)
        return self._tts.say(text, speaker.voice, rate, pitch, pitch_range)


HIBARI_SPEED = (0.75, 1.35)
HIBARI_PITCH = (0.75, 1.35)  # f0 factor
# resample factor: >1 shifts formants (and pitch) up; flite draws from it too
HIBARI_FORMANT = (0.88, 1.15)


class HibariEngine(Engine):
    name = "hibari"
    can_take_phonemes = True

    def __init__(self) -> None:
        try:
            import hibari
            from hibari.voices import VOICES, voice_path
        except ImportError:
            raise KwsError(f"--engines hibari needs hibari-tts: {VOICES_EXTRA}") from None
        self.version = getattr(hibari, "__version__", "?")
        present = []
        for name in VOICES:
            try:
                voice_path(name, download_missing=False)
            except Exception:  # not in the package nor in hibari's cache: skipped, reported
                continue
            present.append(name)
        self.voices = sorted(present)
        self.missing = sorted(set(VOICES) - set(present))
        if not self.voices:
            raise KwsError("hibari-tts has no voice file present; reinstall hibari-tts")

    def voice_names(self) -> list[str]:
        return self.voices

    def draw_speaker(self, rng: np.random.Generator) -> Speaker:
        # formant factors on a 1/60 grid: 24 kHz x factor stays a multiple of 400 Hz, so the
        # resample to 16 kHz has a small kernel
        formant = round(float(rng.uniform(*HIBARI_FORMANT)) * 60) / 60
        style = (
            round(float(rng.uniform(*HIBARI_SPEED)), 3),
            round(float(rng.uniform(*HIBARI_PITCH)), 3),
            round(formant, 4),
        )
        return Speaker("hibari", self.voices[int(rng.integers(len(self.voices)))], style)

    def phonemes(self, word: str, voice: str) -> str:
        return " ".join(_hibari(voice).phonemize(word))

    def open(self) -> Session:
        return _HibariSession()

    def describe(self) -> dict:
        return {"version": self.version, "voices": self.voices, "missing_voices": self.missing}


@lru_cache(maxsize=8)
def _hibari(voice: str):
    from hibari import Hibari

    return Hibari(voice=voice, threads=1)


class _HibariSession(Session):
    def say(self, text, speaker, seed, phonemes=None):
        from hibari import dsp

        tts = _hibari(speaker.voice)
        speed, pitch, formant = speaker.style
        rng = np.random.default_rng(seed)
        spoken = phonemes if phonemes is not None else " ".join(tts.phonemize(text))
        ids = tts.ids(spoken)
        if len(ids) < 3:
            return np.zeros(0, np.float32)
        feeds = {"ids": np.asarray([ids], np.int64), "speed": np.asarray([speed], np.float32)}
        lh, th, ln, lr, phi, f0 = (o[0] for o in tts.sess.run(None, feeds))
        audio = dsp.synth(lh, th, ln, lr, phi, f0 * pitch, rng)  # pitch without formants
        # formants: play the 24 kHz audio as if recorded at rate*formant (shorter, higher)
        rate = round(tts.sample_rate * formant / 400) * 400
        return resample(np.asarray(audio, np.float32), rate)


PIPER_LENGTH = (0.75, 1.4)
PIPER_NOISE = (0.3, 1.0)
PIPER_NOISE_W = (0.3, 1.2)


class PiperEngine(Engine):
    name = "piper"
    can_take_phonemes = True

    def __init__(self, voice_files: Sequence[str | Path]) -> None:
        try:
            import piper  # noqa: F401
        except ImportError:
            raise KwsError(f"--engines piper needs piper-tts: {VOICES_EXTRA}") from None
        if not voice_files:
            raise ConfigError(
                "--engines piper needs at least one voice: --piper-voice PATH.onnx (a Piper "
                "voice file with its .onnx.json beside it)"
            )
        self.files = [Path(f) for f in voice_files]
        self.configs = {}
        for f in self.files:
            cfg = Path(f"{f}.json")
            if not f.is_file():
                raise KwsError(f"{f}: Piper voice file not found")
            if not cfg.is_file():
                raise KwsError(f"{cfg}: the voice's config is missing (expected beside {f.name})")
            try:
                self.configs[str(f)] = json.loads(cfg.read_text())
                int(self.configs[str(f)]["num_speakers"])
            except (ValueError, KeyError, TypeError):
                raise KwsError(f"{cfg}: not a Piper voice config (no num_speakers)") from None

    def voice_names(self) -> list[str]:
        return [str(f) for f in self.files]

    def draw_speaker(self, rng: np.random.Generator) -> Speaker:
        voice = self.voice_names()[int(rng.integers(len(self.files)))]
        n = max(1, int(self.configs[voice]["num_speakers"]))
        style = (
            float(rng.integers(n)),
            round(float(rng.uniform(*PIPER_LENGTH)), 3),
            round(float(rng.uniform(*PIPER_NOISE)), 3),
            round(float(rng.uniform(*PIPER_NOISE_W)), 3),
        )
        return Speaker("piper", voice, style)

    def phonemes(self, word: str, voice: str) -> str:
        return " ".join("".join(p) for p in _piper(voice).phonemize(word))

    def open(self) -> Session:
        return _PiperSession()

    def describe(self) -> dict:
        return {
            "voices": [
                {"file": f.name, "sha1": _sha1(f), "speakers": self.configs[str(f)]["num_speakers"]}
                for f in self.files
            ]
        }


@lru_cache(maxsize=8)
def _piper(voice: str):
    from piper import PiperVoice

    return PiperVoice.load(voice)


@lru_cache(maxsize=8)
def _model_bytes(voice: str) -> bytes:
    return Path(voice).read_bytes()


class _PiperSession(Session):
    """onnxruntime seeds a voice's noise ops once, when its session is made: so each session
    (one per dataset chunk) makes fresh ones, seeded by the chunk's first Piper clip, and the
    clips after it draw in dataset order."""

    def __enter__(self) -> Session:
        self._sessions: dict = {}
        return self

    def _session(self, voice: str, seed: int):
        import onnxruntime as ort

        if voice not in self._sessions:
            ort.set_seed(int(seed) % 2**31)
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            so.log_severity_level = 3
            self._sessions[voice] = ort.InferenceSession(
                _model_bytes(voice), so, providers=["CPUExecutionProvider"]
            )
        return self._sessions[voice]

    def say(self, text, speaker, seed, phonemes=None):
        from piper import SynthesisConfig

        voice = _piper(speaker.voice)
        voice.session = self._session(speaker.voice, seed)
        sid, length, noise, noise_w = speaker.style
        config = SynthesisConfig(
            speaker_id=int(sid) if voice.config.num_speakers > 1 else None,
            length_scale=length,
            noise_scale=noise,
            noise_w_scale=noise_w,
        )
        spoken = f"[[ {phonemes} ]]" if phonemes is not None else text
        chunks = [c.audio_float_array for c in voice.synthesize(spoken, config)]
        if not chunks:
            return np.zeros(0, np.float32)
        return resample(np.concatenate(chunks).astype(np.float32), voice.config.sample_rate)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


FLITE_VOICES = {"kal": 105.0, "kal16": 105.0, "awb": 110.0, "rms": 105.0, "slt": 170.0}  # f0
FLITE_STRETCH = (0.8, 1.35)
FLITE_PITCH = (0.8, 1.25)
# CMU phones (flite -ps) ↔ IPA, for comparing and for driving flite from IPA (-p)
_ARPABET = {
    "aa": "ɑ", "ae": "æ", "ah": "ʌ", "ao": "ɔ", "aw": "aʊ", "ax": "ə", "ay": "aɪ", "b": "b",
    "ch": "tʃ", "d": "d", "dh": "ð", "eh": "ɛ", "er": "ɜɹ", "ey": "eɪ", "f": "f", "g": "ɡ",
    "hh": "h", "ih": "ɪ", "iy": "i", "jh": "dʒ", "k": "k", "l": "l", "m": "m", "n": "n",
    "ng": "ŋ", "ow": "oʊ", "oy": "ɔɪ", "p": "p", "r": "ɹ", "s": "s", "sh": "ʃ", "t": "t",
    "th": "θ", "uh": "ʊ", "uw": "u", "v": "v", "w": "w", "y": "j", "z": "z", "zh": "ʒ",
}  # fmt: skip


def arpabet_to_ipa(phones: str) -> str:
    return "".join(_ARPABET.get(p.rstrip("012"), "") for p in phones.split() if p != "pau")


def ipa_to_arpabet(ipa: str) -> str | None:
    """The CMU phones of a broad IPA string, or None if a sound has no CMU phone."""
    rest, out = broad(ipa).replace("ɡ", "ɡ").replace("g", "ɡ"), []
    by_length = sorted(_ARPABET.items(), key=lambda kv: -len(kv[1]))
    while rest:
        match = next(((a, i) for a, i in by_length if rest.startswith(i)), None)
        if match is None:
            return None
        out.append(match[0])
        rest = rest[len(match[1]) :]
    return " ".join(["pau", *out, "pau"])


class FliteEngine(Engine):
    name = "flite"
    can_take_phonemes = True

    def __init__(self) -> None:
        import shutil

        self.program = shutil.which("flite")
        if self.program is None:
            raise KwsError(
                "--engines flite needs the flite program on the PATH (a system package: "
                "apt-get install flite, brew install flite)"
            )
        import subprocess

        listed = subprocess.run(
            [self.program, "-lv"], capture_output=True, text=True, timeout=30
        ).stdout
        self.voices = [v for v in FLITE_VOICES if v in listed.split()]
        if not self.voices:
            raise KwsError(f"{self.program}: none of the voices {', '.join(FLITE_VOICES)}")

    def voice_names(self) -> list[str]:
        return self.voices

    def draw_speaker(self, rng: np.random.Generator) -> Speaker:
        voice = self.voices[int(rng.integers(len(self.voices)))]
        formant = round(float(rng.uniform(*HIBARI_FORMANT)) * 40) / 40  # 400 Hz grid at 16k
        style = (
            round(float(rng.uniform(*FLITE_STRETCH)), 3),
            round(FLITE_VOICES[voice] * float(rng.uniform(*FLITE_PITCH)), 1),
            round(formant, 4),
        )
        return Speaker("flite", voice, style)

    def phonemes(self, word: str, voice: str) -> str:
        import subprocess

        run = subprocess.run(
            [self.program, "-voice", voice, "-ps", "-t", word, "-o", "none"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return arpabet_to_ipa(run.stdout)

    def open(self) -> Session:
        return _FliteSession(self.program)

    def describe(self) -> dict:
        import subprocess

        version = subprocess.run(
            [self.program, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        return {"version": version, "voices": self.voices}


class _FliteSession(Session):
    def __init__(self, program: str) -> None:
        self.program = program

    def __enter__(self) -> Session:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="kws-flite-")
        return self

    def __exit__(self, *exc) -> None:
        self._dir.cleanup()

    def say(self, text, speaker, seed, phonemes=None):
        import subprocess

        import soundfile as sf

        stretch, f0, formant = speaker.style
        wav = Path(self._dir.name) / "say.wav"
        what = ["-p", ipa_to_arpabet(phonemes)] if phonemes else ["-t", text]
        cmd = [self.program, "-voice", speaker.voice, "--setf", f"duration_stretch={stretch}",
               "--setf", f"int_f0_target_mean={f0}", *what, "-o", str(wav)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, timeout=60)
        if run.returncode != 0 or not wav.is_file():
            raise KwsError(f"flite failed on {text!r} with {speaker.voice}")
        audio, rate = sf.read(wav, dtype="float32")
        return resample(audio, round(rate * formant))


# ---------------------------------------------------------------- choosing engines


def parse_engines(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if not names or unknown:
        raise ConfigError(
            f"--engines {text!r}: expected a comma-separated list of {', '.join(ENGINES)}"
        )
    return list(dict.fromkeys(names))


def load_engines(names: Sequence[str], piper_voices: Sequence[str | Path] = ()) -> list[Engine]:
    """The engines asked for, each checked present (one error line naming the extra if not)."""
    if piper_voices and "piper" not in names:
        raise ConfigError("--piper-voice is given but piper is not in --engines")
    made: list[Engine] = []
    for name in names:
        if name == "espeak":
            espeak_ng.check_espeak()
            made.append(EspeakEngine())
        elif name == "hibari":
            made.append(HibariEngine())
        elif name == "flite":
            made.append(FliteEngine())
        else:
            made.append(PiperEngine(piper_voices))
    return made
