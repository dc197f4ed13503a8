"""What `kwscli.load()` returns and `kws detect` runs, whatever the engine: a streaming detector
and a threshold, with one way to score a file, a numpy array or live chunks. The torch `Spotter`
(kwscli/detect.py) and the runtime's `OnnxSpotter` (kwscli/runtime.py) set the detector, the
threshold and where it is from; everything a caller does with them is here, once. No torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kwscli.audio import check_finite
from kwscli.detections import (
    REFRACTORY_S,
    Detection,
    FileResult,
    StreamDetector,
    StreamOutput,
    clip_to,
    detect_file,
    find_detections,
)
from kwscli.errors import AudioError


class StreamSpotter:
    """A keyword spotter ready to run:

    spotter.detect("recording.wav")            # [Detection(start, end, time, peak)], seconds
    times, probs = spotter.scores(audio)       # a whole numpy array (16 kHz unless told)
    for chunk in chunks:                       # live audio, any chunk size
        probs = spotter.predict(chunk)         # P(keyword) per completed step
        if (probs >= spotter.threshold).any(): ...
    """

    detector: StreamDetector
    keyword: str
    threshold: float
    threshold_from: str
    state: str

    @property
    def sample_rate(self) -> int:
        return self.detector.features.sample_rate

    def reset(self) -> None:
        """Start a new stream."""
        self.detector.reset()

    def predict(self, chunk: np.ndarray) -> np.ndarray:
        """Feed the next chunk of a stream (1-D float, at `sample_rate`); get P(keyword) for each
        step it completed (none for a chunk shorter than a step)."""
        return self.detector.process(np.asarray(chunk, dtype=np.float32)).probs

    def scores(self, audio: np.ndarray, sample_rate: int | None = None):
        """(times, P(keyword)) over a whole recording given as a numpy array (mono, or channels
        last), as `kws detect` scores a file: a fresh stream, silence after its end."""
        out = self._whole(audio, sample_rate)
        return out.times, out.probs

    def _whole(self, audio: np.ndarray, sample_rate: int | None) -> StreamOutput:
        from kwscli.audio import resample

        audio = np.asarray(audio, dtype=np.float32)
        audio = audio.mean(axis=1) if audio.ndim == 2 else audio
        check_finite(audio, "audio")
        audio = resample(audio, sample_rate or self.sample_rate, self.sample_rate)
        self.reset()
        outs = [self.detector.process(audio), self.detector.flush()]
        self.reset()
        return StreamOutput.concat(outs)

    def detect(
        self, source: str | Path | np.ndarray, sample_rate: int | None = None
    ) -> list[Detection]:
        """The keyword's detections in a file (any format soundfile reads) or a numpy array."""
        if isinstance(source, np.ndarray):
            out = self._whole(source, sample_rate)
            duration = len(source) / (sample_rate or self.sample_rate)
            found = find_detections(
                out.times,
                out.probs,
                out.focus,
                self.threshold,
                REFRACTORY_S,
                self.detector.window_seconds,
            )
            return clip_to(found, duration)
        result = self.detect_file(source)
        if result.error:
            raise AudioError(result.error)
        return result.detections

    def detect_file(self, path: str | Path, keep_trace: bool = False) -> FileResult:
        """One file, streamed in bounded memory; an unreadable file is reported in the result."""
        return detect_file(path, self.detector, self.threshold, keep_trace=keep_trace)
