"""Spot the keyword live: audio from a block source — the microphone (sounddevice, the optional
`kws[listen]` extra) or a wav played as if it were one — through the streaming detector `kws
detect` runs (`runtime.load_spotter`: torch, or onnxruntime for an `.onnx` model), each detection
handed to a callback as soon as it is final. Nothing here prints; `kws listen` renders.

A detection is final once the refractory period has passed after its last firing window: no
later window can merge into it any more (`DetectionTracker.expire`). So the detections are
exactly those `kws detect` finds in the same audio, each reported about a second after the word.

From Python:

    from kwscli.listen import Microphone, listen
    from kwscli.runtime import load_spotter

    listen(load_spotter(), Microphone(), duration=60, on_detection=print)
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kwscli.detections import (
    REFRACTORY_S,
    Detection,
    DetectionTracker,
    FileResult,
    clip_to,
    read_blocks,
    resample_blocks,
)
from kwscli.errors import AudioError, ConfigError, KwsError
from kwscli.extras import missing
from kwscli.shapes import SAMPLE_RATE

BLOCK_SECONDS = 0.1  # audio a source hands over at a time: the latency it adds
TRY_SIMULATE = "kws listen --simulate FILE.wav plays a wav as if it were the microphone"


class BlockSource(Protocol):
    """Where `listen` gets its audio: mono float32 blocks at `sample_rate`, until the iterator of
    `blocks()` ends or is closed (closing it stops the source)."""

    sample_rate: int
    description: str  # what is listened to, said once before listening
    notes: list[str]  # what was done to the audio (resampled, mixed to mono...)

    def blocks(self) -> Iterator[np.ndarray]: ...


@dataclass
class ListenResult:
    source: str
    seconds: float = 0.0  # audio listened to
    detections: list[Detection] = field(default_factory=list)
    interrupted: bool = False  # stopped by Ctrl-C
    notes: list[str] = field(default_factory=list)


def listen(
    spotter,
    source: BlockSource,
    duration: float | None = None,
    on_detection: Callable[[Detection], None] | None = None,
) -> ListenResult:
    """Feed `source` block by block through `spotter`'s detector (a torch `Spotter` or an
    `OnnxSpotter`), calling `on_detection` for each detection as soon as it is final, until the
    source ends, `duration` seconds of audio have been heard, or Ctrl-C (which ends listening
    normally: `interrupted` is set)."""
    check_duration(duration)
    detector = spotter.detector
    rate = detector.features.sample_rate
    limit = None if duration is None else round(duration * rate)
    tracker = DetectionTracker(spotter.threshold, REFRACTORY_S, detector.window_seconds)
    result = ListenResult(source.description)
    heard = 0  # samples at `rate`

    def report(found: list[Detection]) -> None:
        for d in found:
            if on_detection is not None:
                on_detection(d)

    detector.reset()
    raw = source.blocks()
    blocks = resample_blocks(raw, source.sample_rate, rate)
    try:
        for block in blocks:
            if limit is not None:
                block = block[: limit - heard]
            heard += len(block)
            out = detector.process(block)
            found = tracker.feed(out)
            if len(out.times):
                found += tracker.expire(float(out.times[-1]))
            report(found)
            if limit is not None and heard >= limit:
                break
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        blocks.close()
        raw.close()
    result.seconds = heard / rate
    before = len(tracker.done)
    if not result.interrupted:  # the last moments, scored with silence after them, as detect does
        tracker.feed(detector.flush())
    report(clip_to(tracker.close()[before:], result.seconds))
    result.detections = tracker.done
    result.notes = list(source.notes)
    return result


def check_duration(duration: float | None) -> None:
    if duration is not None and not 0 < duration < math.inf:  # NaN included
        raise ConfigError(f"--duration {duration:g}: must be a number of seconds > 0")


# ---------------------------------------------------------------- a wav as the microphone


class WavPlayback:
    """A wav (any file soundfile reads, or `-` for standard input) played as if it were the
    microphone: blocks of BLOCK_SECONDS, each handed over when it would have been recorded —
    `speed` times faster than real time (0: as fast as the detector takes them)."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = SAMPLE_RATE,
        speed: float = 1.0,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        if not speed >= 0:  # NaN included
            raise ConfigError(f"--speed {speed:g}: must be ≥ 0 (1 is real time, 0 no waiting)")
        self.path, self.sample_rate, self.speed = Path(path), sample_rate, speed
        self._file = FileResult(str(path))
        self._blocks = read_blocks(self.path, sample_rate, block_seconds, self._file)
        self._first = next(self._blocks)  # a missing or unreadable file fails here, not later
        self.notes = self._file.notes
        pace = "real time" if speed == 1 else "no waiting" if speed == 0 else f"{speed:g}× speed"
        self.description = f"{path} as the microphone ({pace})"

    def blocks(self) -> Iterator[np.ndarray]:
        start, played = time.monotonic(), 0.0
        blocks = self._blocks
        try:
            for block in _chain(self._first, blocks):
                played += len(block) / self.sample_rate
                if self.speed:
                    delay = start + played / self.speed - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                yield block
        finally:
            blocks.close()


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


# ---------------------------------------------------------------- the microphone


def import_sounddevice():
    """sounddevice, or one line saying how to get it (the module, or the PortAudio library it
    loads)."""
    try:
        import sounddevice
    except ImportError:
        raise KwsError(f"{missing('sounddevice')} (or: {TRY_SIMULATE})") from None
    except OSError as exc:  # the module is there, the system library it loads is not
        raise KwsError(
            f"sounddevice cannot load the PortAudio library ({exc}): install it (Debian/Ubuntu: "
            f"apt-get install libportaudio2; macOS: brew install portaudio) (or: {TRY_SIMULATE})"
        ) from None
    return sounddevice


@dataclass
class InputDevice:
    index: int
    name: str
    host_api: str
    channels: int  # most input channels
    sample_rate: int  # its default rate
    default: bool  # the one used without --device


def input_devices() -> list[InputDevice]:
    """Every device that can record, as sounddevice (PortAudio) sees it."""
    sd = import_sounddevice()
    try:
        default = int(sd.query_devices(kind="input")["index"])
    except Exception:  # no default input device
        default = None
    apis = sd.query_hostapis()
    return [
        InputDevice(
            i,
            d["name"],
            apis[d["hostapi"]]["name"],
            int(d["max_input_channels"]),
            int(d["default_samplerate"]),
            i == default,
        )
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


def device_choice(device: str | int | None) -> str | int | None:
    """`--device 3` is device 3; any other text a part of a device's name (sounddevice's rule)."""
    if isinstance(device, str) and device.strip().isdigit():
        return int(device)
    return device


class Microphone:
    """An input device (`device`: an index, a part of its name, or None for the default) through
    sounddevice: PortAudio's callback thread puts each block in a queue, `blocks()` takes them
    out. Recorded at `sample_rate` where the device allows it, else at its own default rate (and
    resampled by `listen`)."""

    def __init__(
        self,
        device: str | int | None = None,
        sample_rate: int = SAMPLE_RATE,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        self.sd = sd = import_sounddevice()
        device = device_choice(device)
        try:
            info = sd.query_devices(device, kind="input")
        except Exception as exc:
            what = "no default input device" if device is None else f"--device {device}"
            raise KwsError(
                f"{what}: {_short(exc)} (kws listen --list-devices lists them)"
            ) from None
        self.device, self.notes = int(info["index"]), []
        try:
            sd.check_input_settings(
                device=self.device, channels=1, dtype="float32", samplerate=sample_rate
            )
            self.sample_rate = sample_rate
        except Exception:
            self.sample_rate = int(info["default_samplerate"])
            self.notes.append(
                f"the device does not record at {sample_rate} Hz: recorded at "
                f"{self.sample_rate} Hz and resampled"
            )
        self.block = max(1, round(self.sample_rate * block_seconds))
        self.description = f"microphone {self.device} ({info['name']}) at {self.sample_rate} Hz"
        self.overflows = 0  # blocks PortAudio had to drop: the machine fell behind

    def _callback(self, indata, frames, time_info, status) -> None:
        if status:
            self.overflows += 1
        self.queue.put(indata[:, 0].copy())  # PortAudio reuses its buffer

    def blocks(self) -> Iterator[np.ndarray]:
        sd, self.queue = self.sd, queue.Queue()
        try:
            stream = sd.InputStream(
                samplerate=self.sample_rate,
                blocksize=self.block,
                device=self.device,
                channels=1,
                dtype="float32",
                callback=self._callback,
            )
        except Exception as exc:
            raise KwsError(f"{self.description}: cannot record ({_short(exc)})") from None
        try:
            with stream:
                while True:
                    try:
                        yield self.queue.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                    except queue.Empty:
                        if not stream.active:
                            raise AudioError(
                                f"{self.description}: the input stream stopped (unplugged?)"
                            ) from None
        finally:
            if self.overflows:
                n = self.overflows
                self.notes.append(f"{n} block{'s' * (n != 1)} came with an overflow: audio lost")


def open_source(
    simulate: Path | None, device: str | None, speed: float | None, sample_rate: int
) -> BlockSource:
    """`kws listen`'s source: the wav given with --simulate, or the microphone."""
    if simulate is not None:
        if device is not None:
            raise ConfigError(f"--device {device} and --simulate: give one of them")
        return WavPlayback(simulate, sample_rate, 1.0 if speed is None else speed)
    if speed is not None:
        raise ConfigError(
            f"--speed {speed:g}: a microphone runs in real time (--speed needs --simulate)"
        )
    return Microphone(device, sample_rate)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:160] if text else type(exc).__name__
