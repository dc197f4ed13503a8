"""The optional installs (pyproject.toml's extras): whether one is there, and the one-line error
naming the extra to install when a command needs it and it is not."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from kwscli.errors import KwsError

# module → (the extra that installs it, what it is needed for)
EXTRAS = {
    "matplotlib": ("plot", "plotting"),
    "espeakng_loader": ("synth", "speech synthesis (espeak-ng)"),
    "onnx": ("onnx", "ONNX export"),
    "onnxruntime": ("runtime", "running an .onnx model"),
    "sounddevice": ("listen", "listening to a microphone"),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(module: str) -> KwsError:
    extra, purpose = EXTRAS[module]
    package = module.replace("_", "-")
    return KwsError(f'{purpose} needs {package}, not installed here: pip install "kws[{extra}]"')


def require(module: str) -> ModuleType:
    """Import `module`, or raise the one-line error that names its extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing(module) from None


def check(module: str) -> None:
    """Raise the missing-extra error now, before any work, if `module` is not installed."""
    if not installed(module):
        raise missing(module)
