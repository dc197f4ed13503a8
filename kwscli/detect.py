"""Spot the keyword with a kws checkpoint (torch): the `Spotter` behind `kws detect` and the
Python API, its streaming detector and its threshold. Reading audio and turning P(keyword) into
detections is kwscli/detections.py, shared with the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

from kwscli.checkpoint import Checkpoint
from kwscli.detections import (
    REFRACTORY_S,
    DetectRun,
    check_threshold,
    run_files,
)
from kwscli.errors import CheckpointError, ConfigError
from kwscli.inference import build_model
from kwscli.metrics import DEFAULT_THRESHOLD
from kwscli.models.streaming import StreamingDetector
from kwscli.spotter import StreamSpotter


def make_detector(ckpt: Checkpoint, state: str = "window", step: int = 1) -> StreamingDetector:
    if state == "carry" and ckpt.model.bidirectional:
        raise ConfigError(
            "--state carry needs a one-directional GRU: a bidirectional model reads the future; "
            "use --state window"
        )
    model = build_model(ckpt)
    if ckpt.kind == "fp16":
        # fp16 is how the weights are stored; the CPU has no fast float16 arithmetic, so the
        # stream is computed in float32 from the exact upcast weights (4x faster on the hour),
        # as the exported ONNX model computes it
        model = model.float()
    return StreamingDetector(model, ckpt.features, step=step, state=state)


def stored_threshold(ckpt: Checkpoint, state: str) -> tuple[float, str]:
    """The threshold `kws detect --state STATE` uses when none is given, and where it is from:
    the calibration for that state mode; else the checkpoint's one threshold (said to be
    calibrated for another mode when it is); else DEFAULT_THRESHOLD."""
    cal = ckpt.provenance.calibration or {}
    per_state = cal.get("thresholds") or {}
    if state in per_state:
        how = f"calibrated for --state {state} at {cal.get('target_fa_per_hour', '?'):g} FA/h"
        mine = (cal.get("states") or {}).get(state) or {}
        if mine.get("limited_by") == "max_real_frr":
            how = (
                f"calibrated for --state {state}: {mine['fa_per_hour']:g} FA/h, lowered from "
                f"{cal.get('target_fa_per_hour', '?'):g} FA/h to miss "
                f"{mine['real_frr']:.0%} of {mine['real_positives']} real keyword clips"
            )
        elif mine.get("real_frr") is not None:
            how += f", misses {mine['real_frr']:.0%} of {mine['real_positives']} real keyword clips"
        return float(per_state[state]), how
    if not ckpt.threshold:
        return DEFAULT_THRESHOLD, "default (the model has no calibrated threshold)"
    if ckpt.provenance.calibration_before_compression and not ckpt.provenance.calibration:
        return ckpt.threshold, (
            "checkpoint (calibrated before compression: run kws calibrate on this model)"
        )
    mode = cal.get("state")
    if mode and mode != state:
        return ckpt.threshold, (
            f"checkpoint, calibrated for --state {mode} only (run kws calibrate --state {state})"
        )
    return ckpt.threshold, "checkpoint"


def check_state(state: str) -> str:
    if state not in ("window", "carry"):
        raise ConfigError(f"--state {state!r}: expected window or carry")
    return state


class Spotter(StreamSpotter):
    """A keyword spotter on a kws checkpoint (torch): the checkpoint, its streaming detector and
    its threshold. What `kws detect` runs for a checkpoint; `kwscli.load()` returns one (the calls
    are kwscli/spotter.py's)."""

    def __init__(
        self, model: str | Path = "student", state: str = "window", threshold: float | None = None
    ) -> None:
        from kwscli.checkpoint import load_checkpoint

        check_state(state)
        self.checkpoint = ckpt = load_checkpoint(model)
        if threshold is None:
            threshold, self.threshold_from = stored_threshold(ckpt, state)
            if not 0 < threshold < 1:  # NaN included
                raise CheckpointError(
                    f"{ckpt.path}: its stored threshold {threshold} is not a probability; "
                    "recalibrate it (kws calibrate) or pass --threshold"
                )
        else:
            self.threshold_from = "given"
        self.threshold = check_threshold(threshold)
        self.state = str(state)
        self.detector = make_detector(ckpt, state)
        self.keyword = ckpt.keyword

    @property
    def step_seconds(self) -> float:
        """Seconds between two outputs of `predict`."""
        return self.detector.geometry.step_samples * self.detector.step / self.sample_rate

    def settings(self) -> dict:
        """What a detection depends on: model, keyword, threshold (and where it is from), state
        mode, window and step."""
        return {
            "model": str(self.checkpoint.path),
            "kind": self.checkpoint.kind,
            "keyword": self.keyword,
            "threshold": self.threshold,
            "threshold_from": self.threshold_from,
            "state": self.state,
            "window_s": self.detector.window_seconds,
            "step_s": self.step_seconds,
            "refractory_s": REFRACTORY_S,
        }


def detect_files(
    files: list[Path],
    model: Path | None = None,
    threshold: float | None = None,
    state: str = "window",
    keep_trace: bool = False,
    save_triggers_to: Path | None = None,
) -> DetectRun:
    """Each input through the spotter of `model` (a checkpoint or a bundled name); an unreadable
    file is reported in its result, and the others still run."""
    spotter = Spotter(model or "student", state, threshold)
    return run_files(spotter, files, keep_trace, save_triggers_to)
