"""Detections in a stream of P(keyword), and the audio that feeds it: no torch here, so the
torch-free runtime (kwscli/runtime.py) and `kws detect` share every line of it.

A file is read in blocks (soundfile), mixed to mono, resampled block by block with enough context
that the result equals resampling the whole file, and fed to a detector (anything with `process`,
`flush`, `reset`, `window_seconds` and `features.sample_rate`: the torch `StreamingDetector` or
the ONNX runtime's). Memory stays bounded by the block size, whatever the file's length. P(keyword)
runs above the threshold become detections; runs closer than the refractory period merge, so one
utterance is one detection.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from kwscli.audio import audio_files, check_finite, resample_ratio, write_wav
from kwscli.errors import AudioError, ConfigError


class StreamDetector(Protocol):
    """What `detect_file` streams a file through: the torch `StreamingDetector`, or the
    torch-free runtime's."""

    features: Any  # .sample_rate
    window_seconds: float
    score_seconds: float  # audio `process` scores at a time: what `detect_file` reads at a time

    def reset(self) -> None: ...
    def process(self, audio: np.ndarray) -> StreamOutput: ...
    def flush(self) -> StreamOutput: ...


def attention_focus(weights: np.ndarray, last_centres: np.ndarray, step_s: float) -> np.ndarray:
    """Where each window looked, in seconds: its attention-weighted conv-step centre. Taken
    relative to the window's last step and over the weights' own sum, so a day into a stream
    (centres of 86,400 s, weights whose sum is off 1 by rounding) it is as exact as at its start."""
    offsets = np.arange(-weights.shape[1] + 1, 1) * step_s  # (w,) seconds before the last step
    return last_centres + (weights @ offsets) / weights.sum(axis=1)


@dataclass
class StreamOutput:
    """P(keyword) per step, with the time (s, stream clock) at the end of each step's window."""

    times: np.ndarray  # (n,)
    probs: np.ndarray  # (n,)
    focus: np.ndarray  # (n,) attention-weighted centre time (s) of each window: where it looked

    @classmethod
    def empty(cls) -> StreamOutput:
        z = np.zeros(0)
        return cls(z, z, z)

    @classmethod
    def concat(cls, outs: list[StreamOutput]) -> StreamOutput:
        return cls(*(np.concatenate([getattr(o, k) for o in outs])
                     for k in ("times", "probs", "focus")))  # fmt: skip


STDIN = "-"  # `kws detect -`: a wav (any format soundfile reads) on standard input
BLOCK_SECONDS = 30.0
REFRACTORY_S = 1.0


@dataclass
class Detection:
    start: float  # s: start of the first window that fired
    end: float  # s: end of the last window that fired
    time: float  # s: where the peak window's attention looked: the keyword's position
    peak: float  # highest P(keyword) in the detection

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}

    def __repr__(self) -> str:  # what `print(spotter.detect(...))` shows: the printed precision
        return "Detection(" + ", ".join(f"{k}={v}" for k, v in self.to_dict().items()) + ")"


@dataclass
class FileResult:
    path: str
    duration: float = 0.0  # seconds of audio read
    sample_rate: int = 0  # of the file, before resampling
    channels: int = 0
    notes: list[str] = field(default_factory=list)  # what was done to the audio
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None
    times: np.ndarray | None = field(default=None, repr=False)  # P(keyword) trace
    probs: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self, settings: dict) -> dict:
        return {
            "path": self.path,
            "duration_s": round(self.duration, 3),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "notes": self.notes,
            "error": self.error,
            "detections": [d.to_dict() for d in self.detections],
            "settings": settings,
        }


def read_blocks(
    path: Path,
    sample_rate: int,
    block_seconds: float = BLOCK_SECONDS,
    result: FileResult | None = None,
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sample_rate` from any file soundfile reads, in bounded memory."""
    result = result or FileResult(str(path))
    if str(path) == STDIN:
        source = io.BytesIO(sys.stdin.buffer.read())  # a pipe cannot seek: read it whole
    elif path.is_dir():
        raise AudioError(f"{path}: a folder with no audio files (.wav, .flac, .ogg...) in it")
    elif not path.exists():
        raise AudioError(f"{path}: no such file")
    elif not path.is_file():
        raise AudioError(
            f"{path}: not a regular file (a pipe or a device, which could block forever); "
            f"pass a file, or {STDIN} to read a wav from standard input"
        )
    else:
        source = str(path)
    try:
        f = sf.SoundFile(source)
    except Exception as exc:
        reason = str(exc).splitlines()[-1]
        if not isinstance(source, str):  # soundfile names the in-memory copy by its address
            reason = reason.replace(repr(source), "standard input")
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    with f:
        result.sample_rate, result.channels = f.samplerate, f.channels
        if f.frames == 0:
            raise AudioError(f"{path}: contains no audio samples")
        if f.channels > 1:
            result.notes.append(f"mixed {f.channels} channels to mono")
        if f.samplerate != sample_rate:
            result.notes.append(f"resampled {f.samplerate} Hz → {sample_rate} Hz")
            down, up = resample_ratio(f.samplerate, sample_rate)
            if up * f.samplerate != down * sample_rate:
                result.notes.append(
                    f"{f.samplerate} Hz has no exact ratio to {sample_rate} Hz small enough to "
                    f"filter: resampled at {down}:{up} (rate error "
                    f"{abs(up * f.samplerate / (down * sample_rate) - 1):.1e})"
                )
            if f.samplerate < sample_rate:
                result.notes.append(
                    f"{f.samplerate} Hz holds nothing above "
                    f"{f.samplerate // 2} Hz: expect lower accuracy"
                )
        blocks = (
            _finite(b, path)[:, 0] if f.channels == 1 else _finite(b, path).mean(axis=1)
            for b in f.blocks(
                blocksize=_block_len(f.samplerate, sample_rate, block_seconds),
                dtype="float32",
                always_2d=True,
            )
        )
        try:
            yield from resample_blocks(blocks, f.samplerate, sample_rate)
        except AudioError:
            raise
        except Exception as exc:  # libsndfile can fail mid-file (lost sync, truncation)
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise AudioError(f"{path}: decoding failed part-way ({reason})") from None


def read_ahead(blocks: Generator[np.ndarray, None, None]) -> Iterator[np.ndarray]:
    """`blocks`, the next one read on a second thread while this one is scored: decoding (soundfile
    lets go of the GIL) overlaps the model (which does too), 0.1-0.2 s of an hour. The first
    block is read here, on the caller's thread: opening the source may block (standard input is
    read whole), and Ctrl-C must be able to interrupt that; a thread stuck in it would hold
    stdin's lock and abort Python at exit. Errors come out where they happened, after the blocks
    read before them; stopping early stops the reader, with at most one block read ahead."""
    import queue
    import signal
    import threading

    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def hand(item: tuple) -> bool:
        """Queue `item` for the caller; False once the caller has stopped."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C must wake the caller, not this thread
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for block in blocks:
                if not hand((block, None)):
                    return
            hand((done, None))
        except BaseException as exc:  # handed to the caller, raised there
            hand((None, exc))
        finally:
            blocks.close()  # the file, closed on this thread, where its generator runs

    first = next(blocks, done)
    if first is done:
        return
    reader = threading.Thread(target=read, name="kws-read-ahead", daemon=True)
    reader.start()
    try:
        yield first
        while True:
            block, exc = ready.get()
            if exc is not None:
                raise exc
            if block is done:
                return
            yield block
    finally:
        stop.set()
        reader.join(timeout=1.0)  # at most one block's read away


def _finite(block: np.ndarray, path: Path) -> np.ndarray:
    check_finite(block, path)
    return block


def _block_len(orig: int, new: int, seconds: float) -> int:
    unit = resample_ratio(orig, new)[0]  # a multiple of this maps to a whole number of outputs
    return max(unit, int(orig * seconds) // unit * unit)


def resample_blocks(blocks: Iterator[np.ndarray], orig: int, new: int) -> Iterator[np.ndarray]:
    """Resample a block stream; each block gets `context` neighbouring samples on both sides, so
    the windowed-sinc filter sees what it would see on the whole signal."""
    if orig == new:
        yield from blocks
        return
    unit_in, unit_out = resample_ratio(orig, new)
    context = unit_in * max(1, math.ceil(256 / unit_in))  # ≥ the filter's half-width
    prev = np.zeros(0, np.float32)
    current = None
    for block in blocks:
        if current is not None:
            yield _resample_middle(prev, current, block[:context], orig, new, unit_in, unit_out)
            prev = current[-context:]
        current = block
    if current is not None:
        yield _resample_middle(prev, current, np.zeros(0, np.float32), orig, new, unit_in, unit_out)


def _resample_middle(left, mid, right, orig, new, unit_in, unit_out) -> np.ndarray:
    from kwscli.audio import resample

    out = resample(np.concatenate([left, mid, right]), orig, new)
    start = len(left) // unit_in * unit_out
    n = math.ceil(len(mid) * unit_out / unit_in)
    return out[start : start + n]


def detect_file(
    path: str | Path,
    detector: StreamDetector,
    threshold: float,
    refractory: float = REFRACTORY_S,
    keep_trace: bool = False,
) -> FileResult:
    """Stream one file through `detector` (reset first); errors are returned, not raised."""
    path = Path(path)
    result = FileResult(str(path))
    detector.reset()
    tracker = DetectionTracker(threshold, refractory, detector.window_seconds)
    times, probs = [], []  # only with keep_trace: a day of audio would grow them without end
    try:
        rate = detector.features.sample_rate
        for block in read_ahead(read_blocks(path, rate, detector.score_seconds, result=result)):
            out = detector.process(block)
            result.duration += len(block) / rate
            tracker.feed(out)
            if keep_trace:
                times.append(out.times)
                probs.append(out.probs)
    except AudioError as exc:
        if result.duration == 0:
            result.error = str(exc)
            return result
        # truncated or damaged part-way: what was read is scored and reported, with a warning
        result.notes.append(
            f"warning: only the first {result.duration:.1f} s could be read "
            f"({str(exc).removeprefix(f'{path}: ')})"
        )
    out = detector.flush()  # the file's last moments, scored with silence after them
    tracker.feed(out)
    if keep_trace:
        times.append(out.times)
        probs.append(out.probs)
    if result.duration < detector.window_seconds:
        result.notes.append(
            f"only {result.duration:.2f} s of audio: scored as one window padded with silence"
        )
    result.detections = clip_to(tracker.close(), result.duration)
    if keep_trace:
        result.times, result.probs = (np.concatenate(x) for x in (times, probs))
    return result


class DetectionTracker:
    """`find_detections` on a stream, in constant memory: outputs go in block by block, closed
    detections accumulate, nothing else is kept. `close()` ends the stream."""

    def __init__(self, threshold: float, refractory: float, window_s: float) -> None:
        self.threshold, self.refractory, self.window_s = threshold, refractory, window_s
        self.done: list[Detection] = []
        self.run: list[float] | None = None  # first time, last time, peak P, peak focus

    def feed(self, out) -> list[Detection]:
        """Take a block of outputs (times, probs, focus); return the detections it closed."""
        closed = []
        for i in np.flatnonzero(out.probs >= self.threshold):
            t, p, f = float(out.times[i]), float(out.probs[i]), float(out.focus[i])
            run = self.run
            if run is not None and t - run[1] <= self.refractory:
                run[1] = t
                if p > run[2]:  # the first of equal peaks, as np.argmax
                    run[2], run[3] = p, f
                continue
            if run is not None:
                closed.append(self._detection(run))
            self.run = [t, t, p, f]
        self.done.extend(closed)
        return closed

    def expire(self, now: float) -> list[Detection]:
        """Close the open run if no output after time `now` (s) can join it any more: a live
        stream (kwscli/listen.py) gets each detection `refractory` s after its last window fired,
        the same detection the stream's end would give."""
        if self.run is None or now - self.run[1] <= self.refractory:
            return []
        closed = [self._detection(self.run)]
        self.run = None
        self.done.extend(closed)
        return closed

    def close(self) -> list[Detection]:
        if self.run is not None:
            self.done.append(self._detection(self.run))
            self.run = None
        return self.done

    def _detection(self, run: list[float]) -> Detection:
        first, last, peak, focus = run
        start = max(0.0, first - self.window_s)
        # attention can rest on the silence before a file starts: keep the time inside the span
        return Detection(start=start, end=last, time=min(max(focus, start), last), peak=peak)


def find_detections(
    times: np.ndarray,
    probs: np.ndarray,
    focus: np.ndarray,
    threshold: float,
    refractory: float,
    window_s: float,
) -> list[Detection]:
    """Runs of P ≥ threshold in a whole trace; a run starting within `refractory` s of the
    previous one's end is the same utterance and is merged into it (`DetectionTracker`, fed
    once)."""
    tracker = DetectionTracker(threshold, refractory, window_s)
    tracker.feed(StreamOutput(times, probs, focus))
    return tracker.close()


def save_triggers(
    result: FileResult, out_dir: Path, sample_rate: int, name: str, pad: float = 0.25
) -> list[Path]:
    """Write each detection's audio (± pad) as a wav named after the input (`name`, unique among
    the command's inputs), to collect false alarms for retraining."""
    written = []
    path = Path(result.path)
    if result.path == STDIN:
        result.notes.append("triggers not saved: standard input cannot be read twice")
        return written
    for i, d in enumerate(result.detections):
        start, end = max(0.0, d.start - pad), min(result.duration, d.end + pad)
        audio = read_segment(path, start, end, sample_rate)
        target = out_dir / f"{name}_{i:03d}_{d.time:.2f}s_p{d.peak:.2f}.wav"
        write_wav(target, audio, sample_rate)
        written.append(target)
    return written


def read_segment(path: Path, start: float, end: float, sample_rate: int) -> np.ndarray:
    """Seconds [start, end) of a file, mono at `sample_rate`, read without loading the rest."""
    from kwscli.audio import resample

    with sf.SoundFile(str(path)) as f:
        f.seek(int(start * f.samplerate))
        block = f.read(int((end - start) * f.samplerate), dtype="float32", always_2d=True)
        sr = f.samplerate
    return resample(block.mean(axis=1), sr, sample_rate)


def check_threshold(threshold: float) -> float:
    if not 0 < threshold < 1:
        raise ConfigError(f"--threshold {threshold}: must be between 0 and 1 (exclusive)")
    return threshold


def clip_to(detections: list[Detection], duration: float) -> list[Detection]:
    """The flush's windows reach past the end of the audio: keep times inside it."""
    for d in detections:
        d.end = min(d.end, duration)
        d.time = min(d.time, d.end)
    return detections


def expand_inputs(inputs: list) -> list[Path]:
    """Files as given; a folder as every audio file under it; `-` as standard input."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if str(item) != STDIN and path.is_dir():
            try:
                out.extend(audio_files(path))
            except AudioError:
                out.append(path)  # reported in its own result: the other inputs still run
        else:
            out.append(path)
    return out


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the system.

    A stream scores the same block shapes over and over (a 30 s block's spectrum is 5 MB), and
    glibc returns each such buffer to the system when it is freed, so the next block faults its
    pages in afresh: 0.3-0.4 s of system time in an hour under torch. Raising glibc's mmap and
    trim thresholds to their 32 MiB ceiling keeps up to that much freed memory for reuse (peak
    RSS grows by about 25 MiB under torch). For a `kws` process only: a library must not change
    its host's allocator. Elsewhere than glibc it does nothing and returns False."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no symbol table to look in
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_threshold, ceiling = -1, -3, 32 * 1024 * 1024
    return bool(mallopt(m_mmap_threshold, ceiling)) and bool(mallopt(m_trim_threshold, ceiling))


@dataclass
class DetectRun:
    results: list[FileResult]
    settings: dict


def run_files(
    spotter, files: list, keep_trace: bool = False, save_triggers_to: Path | None = None
) -> DetectRun:
    """Each input (files, folders, `-`) through `spotter` (a torch `Spotter` or the runtime's
    `OnnxSpotter`): one result per file, trigger clips saved under names unique per input."""
    from kwscli.files import unique_stems

    files = expand_inputs(files)
    results = []
    for path, name in zip(files, unique_stems(files), strict=True):
        r = spotter.detect_file(path, keep_trace=keep_trace)
        if save_triggers_to is not None and not r.error and r.detections:
            saved = save_triggers(r, save_triggers_to, spotter.sample_rate, name)
            r.notes.append(f"saved {len(saved)} trigger(s) to {save_triggers_to}")
        results.append(r)
    return DetectRun(results, spotter.settings())
