"""Pick a detection threshold for a target false-alarm rate, measured on keyword-free audio, and
keep it (with the facts behind it) in the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kwscli.audio import audio_files
from kwscli.checkpoint import load_checkpoint, save_checkpoint
from kwscli.detect import check_state, make_detector
from kwscli.detections import REFRACTORY_S, detect_file, find_detections
from kwscli.errors import ConfigError, DataError, KwsError
from kwscli.metrics import DEFAULT_THRESHOLD

STATES = ("window", "carry")


@dataclass
class StateCalibration:
    """The threshold for one state mode and what it costs, on each set that was given."""

    state: str
    threshold: float
    fa_per_hour: float  # measured at `threshold` on the negatives
    false_alarms: int
    frr: float | None  # on the validation keyword clips at `threshold`
    positives: int
    real_frr: float | None = None  # on the --positives keyword clips (real voices)
    real_positives: int = 0
    real_fpr: float | None = None  # clips of other words under --positives that fire
    real_negatives: int = 0
    limited_by: str = "fa_per_hour"  # or "max_real_frr": lowered to keep real false rejects down


@dataclass
class Calibration:
    model: str
    output: str
    target_fa_per_hour: float
    threshold: float  # of the first state mode calibrated (window unless only carry)
    fa_per_hour: float
    false_alarms: int
    hours: float  # of negative audio actually read
    files: int
    skipped: list[str]
    frr: float | None
    positives: int
    state: str
    states: dict[str, dict] = field(default_factory=dict)  # state → StateCalibration as a dict
    positives_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def too_short(self) -> str | None:
        """Why the negatives cannot show whether the target is met: one false alarm in H hours
        is already 1/H per hour, so a target below that is never measured, only hoped for."""
        finest = 1 / self.hours if self.hours else float("inf")
        if self.target_fa_per_hour >= finest:
            return None
        need = 1 / self.target_fa_per_hour if self.target_fa_per_hour else float("inf")
        need_text = f"at least {need:.3g} h" if need < float("inf") else "hours"
        return (
            f"{self.hours:.3g} h of negatives can only tell 0 false alarms from {finest:.3g} per "
            f"hour; {self.target_fa_per_hour:g} FA/h needs {need_text} of keyword-free audio to "
            "be measured"
        )


def threshold_grid() -> np.ndarray:
    """Candidate thresholds, dense near 1 where low false-alarm operating points live. Never
    below 0.5: there the model itself says "not the keyword", and negatives that never fire
    (a quiet hour, a state mode that settles low) would otherwise pull the threshold down to
    where real speech fires."""
    low = np.linspace(DEFAULT_THRESHOLD, 0.95, 46)
    return np.unique(np.concatenate([low, 1 - np.logspace(-7, -1.3, 120)]))


def calibrate(
    model_path: str | Path,
    negatives: str | Path,
    fa_per_hour: float,
    out: str | Path | None = None,
    data: str | Path | None = None,
    state: str = "both",
    force: bool = False,
    positives: str | Path | None = None,
    max_real_frr: float | None = None,
) -> Calibration:
    """The lowest threshold meeting `fa_per_hour` on `negatives`, for each state mode asked
    (`both`: window and carry, each stored), with the false rejects it costs on the validation
    keyword clips and, with `positives` (real clips, Speech Commands layout), on real voices.

    `max_real_frr`: where that threshold misses more than this share of the real keyword clips,
    it is lowered to the highest one that does not (real voices first), and the false alarms per
    hour it then costs on `negatives` are measured and stored (`limited_by: max_real_frr`)."""
    from kwscli.files import check_output

    if state != "both":
        check_state(state)
    if not 0 <= fa_per_hour < float("inf"):
        raise ConfigError(f"--fa-per-hour {fa_per_hour}: must be ≥ 0 and finite")
    if max_real_frr is not None:
        if positives is None:
            raise ConfigError("--max-real-frr needs real keyword clips: --positives DIR")
        if not 0 <= max_real_frr < 1:
            raise ConfigError(f"--max-real-frr {max_real_frr}: must be in [0, 1)")
    ckpt = load_checkpoint(model_path)
    out = Path(out) if out else Path(model_path).with_suffix(".calibrated.pt")
    check_output(out, force, inputs=(ckpt.path, negatives))
    files = audio_files(Path(negatives), "keyword-free audio")
    real = _real_clips(Path(positives), ckpt.keyword) if positives is not None else None
    states = list(STATES) if state == "both" else [state]
    if ckpt.model.bidirectional and "carry" in states:
        if state == "carry":
            make_detector(ckpt, "carry")  # its one-line error
        states.remove("carry")
    results: dict[str, StateCalibration] = {}
    hours, skipped = 0.0, []
    for mode in states:
        detector = make_detector(ckpt, mode)
        traces, skipped, hours = _negative_traces(files, detector, negatives)
        count_at = _false_alarm_counter(traces, detector.window_seconds)
        chosen, count = _lowest_meeting(count_at, hours, fa_per_hour)
        limited_by = "fa_per_hour"
        if real is not None:
            pos, neg = (_clip_peaks(clips, detector) for clips in real)
            if max_real_frr is not None and np.mean(pos < chosen) > max_real_frr:
                chosen = _highest_keeping(pos, max_real_frr, mode)
                count, limited_by = count_at(chosen), "max_real_frr"
        frr, n_val = _frr(ckpt, data, detector, chosen)
        cal = StateCalibration(mode, chosen, count / hours, count, frr, n_val)
        cal.limited_by = limited_by
        if real is not None:
            cal.real_frr, cal.real_positives = float(np.mean(pos < chosen)), len(pos)
            if len(neg):
                cal.real_fpr, cal.real_negatives = float(np.mean(neg >= chosen)), len(neg)
        results[mode] = cal
    first = results[states[0]]
    ckpt.threshold = first.threshold
    result = Calibration(
        model=str(model_path),
        output=str(out),
        target_fa_per_hour=fa_per_hour,
        threshold=first.threshold,
        fa_per_hour=first.fa_per_hour,
        false_alarms=first.false_alarms,
        hours=hours,
        files=len(files) - len(skipped),
        skipped=skipped,
        frr=first.frr,
        positives=first.positives,
        state=first.state,
        states={k: asdict(v) for k, v in results.items()},
        positives_dir=str(positives) if positives is not None else None,
    )
    stored = {k: v for k, v in result.to_dict().items() if k not in ("model", "output", "skipped")}
    stored["thresholds"] = {k: v.threshold for k, v in results.items()}
    ckpt.provenance.calibration = stored
    save_checkpoint(ckpt, out)
    return result


def _negative_traces(files: list[Path], detector, negatives) -> tuple[list, list[str], float]:
    traces, skipped, seconds = [], [], 0.0
    for f in files:
        r = detect_file(f, detector, threshold=DEFAULT_THRESHOLD, keep_trace=True)
        if r.error:
            skipped.append(r.error)
            continue
        seconds += r.duration
        traces.append((r.times, r.probs))
    if seconds == 0:
        raise DataError(f"{negatives}: none of its {len(files)} audio files could be read")
    return traces, skipped, seconds / 3600


def _false_alarm_counter(traces, window_s: float):
    def false_alarms(t: float) -> int:  # (the focus argument only places detections: unused)
        return sum(len(find_detections(ts, ps, ts, t, REFRACTORY_S, window_s)) for ts, ps in traces)

    return false_alarms


def _highest_keeping(peaks: np.ndarray, max_frr: float, state: str) -> float:
    """The highest grid threshold that misses at most `max_frr` of the clips with these peaks."""
    grid = threshold_grid()
    ok = [t for t in grid if np.mean(peaks < t) <= max_frr]
    if not ok:
        raise KwsError(
            f"--max-real-frr {max_frr:g}: even at {grid[0]:g} the model misses "
            f"{np.mean(peaks < grid[0]):.0%} of the {len(peaks)} real keyword clips ({state} "
            "state): it does not hear these voices; retrain it (README: Real voices)"
        )
    return float(ok[-1])


def _lowest_meeting(false_alarms, hours: float, fa_per_hour: float):
    for t in threshold_grid():  # lowest threshold meeting the target
        n = false_alarms(t)
        if n / hours <= fa_per_hour:
            return float(t), n
    top = float(threshold_grid()[-1])
    raise KwsError(
        f"no threshold meets {fa_per_hour:g} false alarms/hour on these {hours:.2f} h: even at "
        f"{top:.7f} it fires {false_alarms(top)} times; allow more FA/h, or retrain with these "
        "false alarms (kws detect --save-triggers)"
    )


def _real_clips(folder: Path, keyword: str) -> tuple[list[Path], list[Path]]:
    """(keyword clips, other clips) of a real dataset: `folder/<keyword>/*` are the keyword,
    every other word folder (and `_silence_`) is not; a folder without a keyword subfolder is
    read as keyword clips only."""
    from kwscli.data.speech_commands import keyword_folder, scan_dataset

    if not folder.is_dir():
        raise DataError(f"--positives {folder}: no such folder of keyword clips")
    if (folder / keyword_folder(keyword)).is_dir():
        index = scan_dataset(folder, keyword, "random")
        paths = [folder / p for p in index.paths]
        pos = [p for p, y in zip(paths, index.labels, strict=True) if y == 1]
        neg = [p for p, y in zip(paths, index.labels, strict=True) if y == 0]
        return pos, neg
    return audio_files(folder), []


def _clip_peaks(clips: list[Path], detector) -> np.ndarray:
    """The highest P(keyword) the detector reaches in each clip (unreadable clips left out)."""
    peaks = []
    for p in clips:
        r = detect_file(p, detector, threshold=1.0, keep_trace=True)
        if not r.error:
            peaks.append(float(np.max(r.probs)) if len(r.probs) else 0.0)
    return np.array(peaks)


def _frr(ckpt, data, detector, threshold: float) -> tuple[float | None, int]:
    """Share of the validation keyword clips the detector misses at `threshold`."""
    from kwscli.evaluate import training_split

    root = data or ckpt.data_path
    if not root or not Path(root).is_dir():
        return None, 0
    index = training_split(ckpt, root)
    positives = [index.root / index.paths[i] for i in index.splits["val"] if index.labels[i] == 1]
    missed = 0
    for p in positives:
        r = detect_file(p, detector, threshold)
        missed += not r.detections
    return (missed / len(positives) if positives else None), len(positives)
