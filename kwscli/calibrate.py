"""Pick a detection threshold for a target false-alarm rate, measured on keyword-free audio, and
keep it (with the facts behind it) in the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kwscli.checkpoint import load_checkpoint, save_checkpoint
from kwscli.detect import REFRACTORY_S, check_state, detect_file, find_detections, make_detector
from kwscli.errors import ConfigError, DataError, KwsError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


@dataclass
class Calibration:
    model: str
    output: str
    target_fa_per_hour: float
    threshold: float
    fa_per_hour: float  # measured at `threshold` on the negatives
    false_alarms: int
    hours: float  # of negative audio actually read
    files: int
    skipped: list[str]
    frr: float | None  # on the validation keyword clips at `threshold`
    positives: int
    state: str

    def to_dict(self) -> dict:
        return asdict(self)


def threshold_grid() -> np.ndarray:
    """Candidate thresholds, dense near 1 where low false-alarm operating points live."""
    return np.unique(np.concatenate([np.linspace(0.05, 0.95, 91), 1 - np.logspace(-7, -1.3, 120)]))


def calibrate(
    model_path: str | Path,
    negatives: str | Path,
    fa_per_hour: float,
    out: str | Path | None = None,
    data: str | Path | None = None,
    state: str = "window",
    force: bool = False,
) -> Calibration:
    from kwscli.files import check_output

    check_state(state)
    if fa_per_hour < 0:
        raise ConfigError(f"--fa-per-hour {fa_per_hour}: must be ≥ 0")
    ckpt = load_checkpoint(model_path)
    out = Path(out) if out else Path(model_path).with_suffix(".calibrated.pt")
    check_output(out, force)
    files = audio_files(Path(negatives))
    detector = make_detector(ckpt, state)
    traces, skipped, seconds = [], [], 0.0
    for f in files:
        r = detect_file(f, detector, threshold=0.5, keep_trace=True)
        if r.error:
            skipped.append(r.error)
            continue
        seconds += r.duration
        traces.append((r.times, r.probs))
    if seconds == 0:
        raise DataError(f"{negatives}: none of its {len(files)} audio files could be read")
    hours = seconds / 3600
    window_s = detector.window_seconds

    def false_alarms(t: float) -> int:  # (the focus argument only places detections: unused)
        return sum(len(find_detections(ts, ps, ts, t, REFRACTORY_S, window_s)) for ts, ps in traces)

    chosen, count = None, 0
    for t in threshold_grid():  # lowest threshold meeting the target
        n = false_alarms(t)
        if n / hours <= fa_per_hour:
            chosen, count = float(t), n
            break
    if chosen is None:
        top = float(threshold_grid()[-1])
        raise KwsError(
            f"no threshold meets {fa_per_hour:g} false alarms/hour on these {hours:.2f} h: even at "
            f"{top:.7f} it fires {false_alarms(top)} times; allow more FA/h, or retrain with these "
            "false alarms (kws detect --save-triggers)"
        )
    frr, positives = _frr(ckpt, data, detector, chosen)
    ckpt.threshold = chosen
    result = Calibration(
        model=str(model_path),
        output=str(out),
        target_fa_per_hour=fa_per_hour,
        threshold=chosen,
        fa_per_hour=count / hours,
        false_alarms=count,
        hours=hours,
        files=len(files) - len(skipped),
        skipped=skipped,
        frr=frr,
        positives=positives,
        state=state,
    )
    ckpt.info = {
        **ckpt.info,
        "calibration": {
            k: v for k, v in result.to_dict().items() if k not in ("model", "output", "skipped")
        },
    }
    save_checkpoint(ckpt, out)
    return result


def audio_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise DataError(f"{folder}: no such folder of keyword-free audio")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"no audio files under {folder} (expected .wav, .flac, .ogg, ...)")
    return files


def _frr(ckpt, data, detector, threshold: float) -> tuple[float | None, int]:
    """Share of the validation keyword clips the detector misses at `threshold`."""
    from kwscli.evaluate import training_split

    root = data or ckpt.info.get("data")
    if not root or not Path(root).is_dir():
        return None, 0
    index = training_split(ckpt, root)
    positives = [index.root / index.paths[i] for i in index.splits["val"] if index.labels[i] == 1]
    missed = 0
    for p in positives:
        r = detect_file(p, detector, threshold)
        missed += not r.detections
    return (missed / len(positives) if positives else None), len(positives)
