"""Spot the keyword without torch: an ONNX model written by `kws export MODEL --format onnx`,
run by onnxruntime, fed by soundfile and numpy. `kws detect MODEL.onnx` runs it (and, where torch
is not installed, the bundled student's ONNX copy); it computes what `kws detect` computes in the
file's state mode, step for step (tests/test_runtime.py), in a fraction of the memory and
start-up time. It imports neither torch nor pydantic (kwscli/entry.py keeps Typer away too).

The graph takes log-mel frames (window mode: those of the next windows' conv steps; carry
mode: those of the new steps, with the GRU state). The stream is kept here: the log-mel of every
frame (numpy FFT with the STFT window and mel filterbank stored in the file, so the numbers are
the training ones), a silence prefix so the first word gets a full window, one window every conv
stride, and the same detections (kwscli/detections.py). Audio must be at the model's rate
(16 kHz): the resampler is torch's.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from kwscli.detections import (
    REFRACTORY_S,
    DetectRun,
    StreamOutput,
    attention_focus,
    check_threshold,
)
from kwscli.errors import CheckpointError, ConfigError, KwsError
from kwscli.shapes import LOG_CEIL, LOG_FLOOR, LOG_FLOOR_LOG, StreamGeometry, conv_span, conv_steps
from kwscli.spotter import StreamSpotter

ONNX_FORMAT = "kws-onnx-2"  # 2: the window graph takes frames and runs the conv once per step
READS = ("kws-onnx-1", ONNX_FORMAT)
MAX_THREADS = 256  # --threads: more is a typo (and past 2**31 the engines fail inside)


@dataclass(frozen=True)
class StoredFrontEnd:
    """The front end an exported file was trained with (its `features` metadata, written from
    kwscli.config.FeatureConfig): the part the stream needs, read without pydantic, which would
    cost this torch-free path 20 MB and 0.2 s of start-up."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int

    @classmethod
    def from_json(cls, text: str) -> StoredFrontEnd:
        raw = json.loads(text)
        values = {f.name: raw[f.name] for f in fields(cls)}
        for name, value in values.items():
            if type(value) is not int or value < 1:
                raise ValueError(f"features.{name}={value!r}: not a positive integer")
        return cls(**values)


def is_runtime_model(path) -> bool:
    return Path(str(path)).suffix.lower() == ".onnx"


def bundled_onnx(state: str | None = None) -> Path:
    """The bundled student, exported (student.onnx; for --state carry, student.carry.onnx): the
    default model where torch is not installed."""
    from kwscli.bundled import bundled_model

    try:
        return bundled_model("student", ".carry.onnx" if str(state) == "carry" else ".onnx")
    except CheckpointError as exc:
        raise KwsError(
            f"torch is not installed, and {exc} (kws export MODEL --format onnx makes one)"
        ) from None


class OnnxDetector:
    """The streaming detector of kwscli/models/streaming.py, on onnxruntime, in the state mode the
    file was exported for (`state`): audio chunks of any size in, P(keyword) per conv step out;
    `reset()` starts a new stream."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from kwscli.extras import require

        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: model not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.enable_cpu_mem_arena = False  # a small model: the arena only holds memory
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable ONNX model ({_short(exc)})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("kws_format") not in READS:
            raise CheckpointError(
                f"{path}: not an ONNX model this kws reads (kws_format {meta.get('kws_format')!r}, "
                f"expected one of {', '.join(READS)}); export it with `kws export MODEL --format "
                "onnx` (a newer kws's file needs that kws)"
            )
        try:
            self.meta = meta
            f = self.features = StoredFrontEnd.from_json(meta["features"])
            g = json.loads(meta["geometry"])
            kernel, stride, window = (int(g[k]) for k in ("kernel", "stride", "window"))
            if min(kernel, stride, window) < 1:
                raise ValueError(f"geometry {g}: kernel, stride and window must be ≥ 1")
            self.geometry = StreamGeometry(kernel, stride, window, f)
            self.stft_window = _floats(meta["stft_window"], (f.n_fft,))
            self.fb = _floats(meta["mel_fb"], (f.n_fft // 2 + 1, f.n_mels))
            self.keyword, self.kind = str(meta["keyword"]), str(meta["kind"])
            self.stored_threshold = float(meta["threshold"]), str(meta["threshold_from"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: damaged kws ONNX metadata ({_short(exc)})") from None
        self.path = path
        self.state = meta.get("state", "window")  # files exported before carry: window
        self.score_seconds = 2 if "int8" in meta.get("precision", "") else 10  # see process()
        # window files before kws-onnx-2 take windows of frames, not the frames themselves
        self.takes_windows = self.session.get_inputs()[0].name == "logmel"
        if self.state not in ("window", "carry"):
            raise CheckpointError(f"{path}: damaged kws ONNX metadata (state {self.state!r})")
        self.reset()

    @property
    def window_seconds(self) -> float:
        return self.geometry.window_seconds

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def reset(self) -> None:
        self.pending = np.zeros(0, np.float32)  # samples not yet in a whole frame
        prefix = (self.features.n_mels, self.geometry.prefix_frames)
        self.frames = np.full(prefix, LOG_FLOOR_LOG, np.float32)
        self.windows_done = 0  # windows scored so far (window m starts at frame m * stride)
        self.steps_done = 0  # carry: conv steps computed (the silence prefix's included)
        if self.state == "carry":  # the GRU state, and the last window - 1 outputs and energies
            self.carried = {
                i.name: np.zeros(i.shape, np.float32)
                for i in self.session.get_inputs()
                if i.name != "frames"
            }
            self.carried["energies"][:] = -np.inf  # no attention before the stream starts

    def flush(self) -> StreamOutput:
        """End of stream: half a window of silence, as the torch detector."""
        half = self.geometry.window_frames * self.features.hop_length // 2
        return self.process(np.zeros(half, np.float32))

    def process(self, audio: np.ndarray) -> StreamOutput:
        """Feed audio of any length. The log-mel is taken 2 s at a time and the graph scores up to
        `score_seconds` per call, so memory stays small: 10 s (on the hour 10-15 % faster than
        2 s; 30 s gains no more and holds 4 MB more), except for int8 graphs, which quantize
        their activations per call: 2 s keeps their scales fine (at 30 s the bundled student in
        int8 loses a keyword of the example). `kws detect` reads files in pieces of that size
        too (30 s blocks held 5 MB more)."""
        audio = np.asarray(audio, np.float32).ravel()
        step = self.score_seconds * self.sample_rate
        outs = []
        for start in range(0, max(len(audio), 1), step):
            self._add_frames(audio[start : start + step])
            outs.append(self._carry() if self.state == "carry" else self._windows())
        return outs[0] if len(outs) == 1 else StreamOutput.concat(outs)

    def _add_frames(self, audio: np.ndarray) -> None:
        """The log-mel frames `audio` completes, 2 s of audio at a time (the FFT's arrays then
        stay in cache)."""
        f, piece = self.features, 2 * self.sample_rate
        for start in range(0, len(audio), piece):
            buf = np.concatenate([self.pending, audio[start : start + piece]])
            n = 0 if len(buf) < f.n_fft else (len(buf) - f.n_fft) // f.hop_length + 1
            if n:
                new = numpy_log_mel(buf, n, f.hop_length, self.stft_window, self.fb)
                self.frames = np.concatenate([self.frames, new], axis=1)
            self.pending = buf[n * f.hop_length :]

    def _carry(self) -> StreamOutput:
        """Each new conv step once, the GRU state carried (StreamingDetector._carry)."""
        g = self.geometry
        n = conv_steps(self.frames.shape[1], g.kernel, g.stride)
        if n == 0:
            return StreamOutput.empty()
        used = self.frames[None, :, : conv_span(n, g.kernel, g.stride)]
        self.frames = self.frames[:, n * g.stride :]
        probs, attention, *state = self.session.run(None, {"frames": used, **self.carried})
        self.carried = dict(zip(("hidden", "outputs", "energies"), state, strict=True))
        steps = self.steps_done + np.arange(n)
        self.steps_done += n
        keep = steps >= g.window - 1  # the first window - 1 steps end inside the silence prefix
        focus = attention_focus(attention.astype(np.float64), g.centre_time(steps), g.step_seconds)
        return StreamOutput(g.end_time(steps)[keep], probs.astype(np.float64)[keep], focus[keep])

    def _windows(self) -> StreamOutput:
        """One window every conv stride, GRU from zero in each (StreamingDetector, window). The
        graph takes the frames of the k windows' conv steps (k + window - 1: the last window - 1
        of the previous call again) and runs the conv once on each step. Files exported before
        it (input `logmel`) take the k windows of frames, and run the conv on each."""
        f, g = self.features, self.geometry
        # windows m with m * stride + window_frames ≤ frames kept (the kept start at frame
        # windows_done * stride)
        k = (self.frames.shape[1] - g.window_frames) // g.stride + 1
        if k <= 0:
            return StreamOutput.empty()
        if self.takes_windows:
            frames = np.ascontiguousarray(self.frames)
            s_mel, s_frame = frames.strides
            windows = np.lib.stride_tricks.as_strided(  # (k, n_mels, window_frames), no copy
                frames, (k, f.n_mels, g.window_frames), (s_frame * g.stride, s_mel, s_frame)
            )
            feed = {"logmel": windows}
        else:
            span = conv_span(k + g.window - 1, g.kernel, g.stride)  # the k windows' frames
            feed = {"frames": self.frames[None, :, :span]}  # (1, n_mels, span)
        probs, attention = self.session.run(None, feed)
        m = self.windows_done + np.arange(k)
        self.windows_done += k
        self.frames = self.frames[:, k * g.stride :]
        steps = m + g.window - 1  # the conv step each window ends at (prefix included)
        focus = attention_focus(attention.astype(np.float64), g.centre_time(steps), g.step_seconds)
        return StreamOutput(g.end_time(steps), probs.astype(np.float64), focus)


def numpy_log_mel(
    samples: np.ndarray, n: int, hop: int, window: np.ndarray, fb: np.ndarray
) -> np.ndarray:
    """models/frontend.py's `LogMel` in numpy, from its own window and filterbank: the first `n`
    frames of `samples` (frame k covers [k·hop, k·hop + n_fft), no padding) → (n_mels, n)."""
    n_fft = len(window)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        samples, (n, n_fft), (samples.strides[0] * hop, samples.strides[0]), writeable=False
    )
    spec = np.fft.rfft(frames * window, axis=1)  # float32 in, complex64 out
    power = np.square(spec.real) + np.square(spec.imag)  # (n, freqs)
    mel = power @ fb  # (n, n_mels)
    np.clip(mel, LOG_FLOOR, LOG_CEIL, out=mel)
    return np.log(mel, out=mel).T


class OnnxSpotter(StreamSpotter):
    """A spotter (kwscli/spotter.py) on an exported model: what `kws detect MODEL.onnx` and
    `kwscli.load("MODEL.onnx")` run."""

    def __init__(
        self,
        path: str | Path,
        state: str | None = None,
        threshold: float | None = None,
        threads: int = 1,
    ) -> None:
        self.detector = OnnxDetector(path, threads)
        if state is not None and str(state) != self.detector.state:
            raise ConfigError(
                f"--state {state}: {path} was exported for --state {self.detector.state}; "
                f"export it again with kws export MODEL --format onnx --state {state}"
            )
        self.keyword = self.detector.keyword
        if threshold is None:
            self.threshold, stored_from = self.detector.stored_threshold
            self.threshold_from = f"{stored_from} (stored in the ONNX file)"
            if not 0 < self.threshold < 1:
                raise CheckpointError(f"{path}: its stored threshold is not a probability")
        else:
            self.threshold, self.threshold_from = check_threshold(threshold), "given"
        self.state = self.detector.state

    @property
    def step_seconds(self) -> float:
        """Seconds between two outputs of `predict`."""
        return self.detector.geometry.step_seconds

    def settings(self) -> dict:
        d = self.detector
        return {
            "model": str(d.path),
            "kind": ", ".join([d.kind, "onnx", *filter(None, [d.meta.get("precision")])]),
            "keyword": self.keyword,
            "threshold": self.threshold,
            "threshold_from": self.threshold_from,
            "state": self.state,
            "window_s": d.window_seconds,
            "step_s": self.step_seconds,
            "refractory_s": REFRACTORY_S,
        }


def _floats(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float32).reshape(shape).copy()


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:160] if text else type(exc).__name__


def load_spotter(
    model: Path | None = None,
    threshold: float | None = None,
    state: str | None = None,
    threads: int = 1,
):
    """The spotter `kws detect` and `kws listen` run, engine chosen here: an exported `.onnx`
    model runs on onnxruntime, without torch, and so does the default model where torch is not
    installed (the bundled student's ONNX copy); any other model is a checkpoint, run by torch
    (kwscli/detect.py's `Spotter`)."""
    if (model is None or str(model) == "student") and not torch_installed():
        model = bundled_onnx(state)  # the bundled student's ONNX copy
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"--threads {threads}: must be between 1 and {MAX_THREADS}")
    if model is not None and is_runtime_model(model):
        return OnnxSpotter(model, state, threshold, threads)
    import torch

    from kwscli.detect import Spotter

    # a 2k-parameter model gains nothing from more threads, and they thrash on a shared machine
    torch.set_num_threads(threads)
    return Spotter(model or "student", state or "window", threshold)


def detect_inputs(
    files: list,
    model: Path | None = None,
    threshold: float | None = None,
    state: str | None = None,
    keep_trace: bool = False,
    save_triggers_to: Path | None = None,
    threads: int = 1,
) -> DetectRun:
    """`kws detect`: each input through the spotter of `load_spotter`."""
    from kwscli.detections import keep_freed_memory, run_files

    keep_freed_memory()
    spotter = load_spotter(model, threshold, state, threads)
    return run_files(spotter, files, keep_trace, save_triggers_to)


def torch_installed() -> bool:
    try:
        import torch  # noqa: F401  (the default model needs it anyway when it is there)
    except ImportError:
        return False
    return True
