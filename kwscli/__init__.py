"""kws: train, compress, evaluate and run small keyword spotters.

The Python API (what `kws detect` runs):

    import kwscli
    spotter = kwscli.load()                 # the bundled student; a path; or "teacher"
    spotter.detect("recording.wav")         # [Detection(start, end, time, peak)]
    spotter.predict(chunk)                  # streaming: P(keyword) per completed step

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


def load(model: str = "student", state: str = "window", threshold: float | None = None) -> Spotter:
    """A ready keyword spotter: `model` is a checkpoint path or a bundled model's name
    (`student`, the default detector, or `teacher`); `state` is window or carry; `threshold`
    defaults to the model's calibrated one."""
    from kwscli.detect import Spotter

    return Spotter(model, state, threshold)


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
