"""espeak-ng speech through `espeakng-loader` (no network, no system package): voices,
synthetic speakers, and reproducible synthesis at 16 kHz.

espeak-ng keeps synthesis state in C statics (pitch flutter, wave phase) that neither
`espeak_Terminate`/`espeak_Initialize` nor `espeak_ng_SetRandSeed` reset: one call sounds different
depending on what the process said before. Only a fresh load of the library resets it, so
`Espeak` is one load and `synthesize()` uses a fresh one per call.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from kwscli.audio import SAMPLE_RATE
from kwscli.errors import KwsError

_ACCENTS = "en en-us en-us-nyc en-gb-scotland en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-029"
ACCENTS = tuple(_ACCENTS.split())
# Variants that are robots, heavy echo or test settings rather than a person.
_ROBOTS = "fast demonic tweaky unirobot anikarobot announcer robosoft ricishaymax"
_NOT_A_PERSON = tuple(_ROBOTS.split())
RATE_WPM = (120, 220)
PITCH = (20, 80)
PITCH_RANGE = (25, 75)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an accent, a voice variant and a speaking style, fixed for life."""

    accent: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int = 50

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def id(self) -> str:
        """8 hex digits of the voice identity, like the real dataset's speaker hashes."""
        return speaker_id(self.voice, self.rate, self.pitch, self.pitch_range)


def speaker_id(*parts) -> str:
    """8 hex digits of a speaker's identity (every engine's speakers are named this way)."""
    key = "|".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)
    return hashlib.sha1(key.encode()).hexdigest()[:8]


def _espeak_paths() -> tuple[str, str]:
    from kwscli.extras import require

    espeakng_loader = require("espeakng_loader")
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def check_espeak() -> None:
    """Raise the one-line error naming the package if espeak-ng cannot be found."""
    _espeak_paths()


def text_to_ipa(text: str, voice: str = "en-us") -> str:
    """How espeak-ng pronounces `text`, in IPA (espeak_TextToPhonemes, phoneme mode IPA)."""
    with Espeak() as tts:
        return tts.phonemes(text, voice)


def english_variants() -> list[str]:
    """Voice variants (`+m1`, `+f3`, `+klatt`...) in the bundled data that sound like a person."""
    variants = Path(_espeak_paths()[1]) / "voices" / "!v"
    names = (p.name for p in variants.iterdir() if p.is_file())
    return sorted(n for n in names if not n.lower().startswith(_NOT_A_PERSON))


def random_speakers(count: int, seed: int) -> list[Speaker]:
    """`count` distinct speakers (distinct ids), drawn from accents × variants × style ranges."""
    rng = np.random.default_rng([seed, 1])
    variants = english_variants()
    speakers: dict[str, Speaker] = {}
    while len(speakers) < count:
        s = Speaker(
            ACCENTS[rng.integers(len(ACCENTS))],
            variants[rng.integers(len(variants))],
            int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
            int(rng.integers(PITCH[0], PITCH[1] + 1)),
            int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        )
        speakers.setdefault(s.id, s)
    return list(speakers.values())


_ESPEAK_LOCK = threading.Lock()
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER values


class Espeak:
    """One fresh load of libespeak-ng: `with Espeak() as tts: tts.say(...)`.

    The library is process-global, so only one may be open at a time. Within one instance the
    output of a call depends on the calls before it (see the module docstring).
    """

    def __enter__(self) -> Espeak:
        lib_path, data_path = _espeak_paths()  # before the lock: a failure must not keep it
        if not _ESPEAK_LOCK.acquire(blocking=False):
            raise RuntimeError("only one Espeak may be open per process (espeak-ng is global)")
        try:
            self._lib = lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            _ESPEAK_LOCK.release()
            raise KwsError(f"cannot load espeak-ng from {lib_path} ({exc})") from None
        self._pcm: list[np.ndarray] = []

        def collect(wav, n, _events):  # called by espeak_Synth with each piece of audio
            if n > 0:
                self._pcm.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # held so it outlives every espeak_Synth
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = lib.espeak_Initialize(2, 0, data_path.encode(), 0)  # 2: synchronous
        if self.sample_rate <= 0:
            self._close()
            raise KwsError(f"espeak-ng failed to start with its data in {data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_Info.restype = ctypes.c_char_p
        self.version = lib.espeak_Info(None).decode()
        self._srand = getattr(lib, "espeak_ng_SetRandSeed", None)  # espeak-ng ≥ 1.51
        return self

    def say(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
    ) -> np.ndarray:
        """Speak `text`: float32 mono at SAMPLE_RATE, espeak's short edge silences included."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise KwsError(f"espeak-ng has no voice {voice!r} (expected e.g. 'en-us+f3')")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, int(value), 0)
        # Breathy and rough voices draw on libc's rand() and espeak's own: seed both from the call.
        seed = zlib.crc32(f"{text}|{voice}|{rate}|{pitch}|{pitch_range}".encode())
        _libc_srand(seed)
        if self._srand is not None:
            self._srand(ctypes.c_long(seed))
        self._pcm.clear()
        data = text.encode()
        if lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None) != 0:
            raise KwsError(f"espeak-ng could not speak {text!r}")
        if not self._pcm:
            return np.zeros(0, np.float32)
        pcm = np.concatenate(self._pcm).astype(np.float32) / 32768.0
        return _resample(pcm, self.sample_rate)

    def phonemes(self, text: str, voice: str = "en-us") -> str:
        """IPA of `text` as this voice would say it."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise KwsError(f"espeak-ng has no voice {voice!r} (expected e.g. 'en-us+f3')")
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        buf = ctypes.c_char_p(text.encode())
        parts = []
        while buf.value:
            out = lib.espeak_TextToPhonemes(ctypes.byref(buf), 0, 0x02)  # 0x02: IPA
            if not out:
                break
            parts.append(out.decode())
        return " ".join(parts).strip()

    def __exit__(self, *exc) -> None:
        self._close()

    def _close(self) -> None:
        import _ctypes

        try:
            self._lib.espeak_Terminate()
            unload = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary
            unload(self._lib._handle)
        finally:
            self._lib = None
            _ESPEAK_LOCK.release()


def _libc_srand(seed: int) -> None:
    if _libc_srand_fn() is not None:
        _libc_srand_fn()(ctypes.c_uint(seed))


@lru_cache(maxsize=1)
def _libc_srand_fn():
    try:
        return ctypes.CDLL(None).srand
    except (OSError, TypeError, AttributeError):  # no process-wide libc handle (Windows)
        return None


def synthesize(
    text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50
) -> np.ndarray:
    """Speak `text` with a fresh espeak-ng: float32 at 16 kHz, the same samples for same args."""
    with Espeak() as tts:
        return tts.say(text, voice, rate, pitch, pitch_range)


def resample_to_16k(audio: np.ndarray, orig_sr: int) -> np.ndarray:
    """Float32 audio at `orig_sr` to SAMPLE_RATE (windowed sinc, one kernel per rate)."""
    if orig_sr == SAMPLE_RATE:
        return audio
    return _resample(np.ascontiguousarray(audio, np.float32), orig_sr)


def _resample(audio: np.ndarray, orig_sr: int) -> np.ndarray:
    """audio.resample's windowed sinc, with the kernel built once: 0.3 ms a word instead of 1.1."""
    import torch

    with torch.no_grad():
        return _resampler(orig_sr)(torch.from_numpy(audio)).numpy()


@lru_cache(maxsize=64)
def _resampler(orig_sr: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig_sr, SAMPLE_RATE)
