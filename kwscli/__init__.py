"""kws: train, compress, evaluate and run small keyword spotters.

The Python API (what `kws detect` runs):

    import kwscli
    spotter = kwscli.load()                 # the bundled student; a path; or "teacher"
    spotter.detect("recording.wav")         # [Detection(start, end, time, peak)]
    spotter.predict(chunk)                  # streaming: P(keyword) per completed step
    kwscli.load("model.onnx")               # an exported model: onnxruntime, no torch

`kwscli.load`, `kwscli.Spotter` and `kwscli.Detection` are imported on first use, so `import
kwscli` (and `kws --help`) stays free of torch.
"""

from __future__ import annotations

import os

# numpy's BLAS pool: one thread unless the user chose (set before numpy loads). The matrices here
# are small (the mel filterbank on 2 s of frames); on a busy 2-core machine a pool of spinning
# threads made the torch-free front end 5x slower (benchmarks/bench_detect.py, runtime engine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path
from typing import TYPE_CHECKING

from kwscli.version import __version__

__all__ = ["Detection", "Spotter", "__version__", "example", "load"]

if TYPE_CHECKING:
    from kwscli.detect import Detection, Spotter
    from kwscli.spotter import StreamSpotter


def load(
    model: str | Path | None = None,
    state: str | None = None,
    threshold: float | None = None,
    threads: int = 1,
) -> StreamSpotter:
    """A ready keyword spotter, on the engine `kws detect` would choose: `model` is a checkpoint
    path or a bundled model's name (`student`, the default, or `teacher`), run by torch, or an
    exported `.onnx` file, run by onnxruntime without torch (and where torch is not installed the
    bundled student is its ONNX copy); `state` is window (the default) or carry (an `.onnx` file
    runs the mode it was exported for); `threshold` defaults to the model's calibrated one."""
    from kwscli.runtime import load_spotter

    return load_spotter(None if model is None else Path(str(model)), threshold, state, threads)


def example() -> Path:
    """The example recording that ships with kws (45 s at 16 kHz, "sheila" four times; its
    answer key beside it, `example().with_suffix(".json")`)."""
    from kwscli.bundled import bundled_example

    return bundled_example()


def __getattr__(name: str):
    if name in ("Spotter", "Detection"):
        from kwscli import detect

        return getattr(detect, name)
    raise AttributeError(f"module 'kwscli' has no attribute {name!r}")
