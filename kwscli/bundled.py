"""The files that ship inside the package: the bundled models (`student`, the default detector,
and `teacher`), the student's ONNX copies for the torch-free runtime, and the example recording.
Paths only, so the runtime finds them without importing torch or pydantic."""

from __future__ import annotations

import os
from pathlib import Path

from kwscli.errors import CheckpointError

BUNDLED = Path(__file__).parent / "assets"
BUNDLED_NAMES = ("student", "teacher")
EXAMPLE_NAME = "sheila_example.wav"


def bundled_model(name: str = "student", suffix: str = ".pt") -> Path:
    """A model that ships with kws (`student`, the default detector, or `teacher`; `.onnx`:
    the student exported for the torch-free runtime): $KWS_MODELS_DIR/NAME.SUFFIX, else the one
    in the package."""
    path = Path(os.environ.get("KWS_MODELS_DIR") or BUNDLED) / f"{name}{suffix}"
    if not path.is_file():
        raise CheckpointError(
            f"no bundled {name} model at {path}; pass --model FILE{suffix} (a model file)"
        )
    return path


def bundled_example() -> Path:
    """The example recording that ships with kws (45 s, "sheila" four times; its answer key
    beside it as sheila_example.json): `kws detect --example` after any install."""
    return BUNDLED / EXAMPLE_NAME
