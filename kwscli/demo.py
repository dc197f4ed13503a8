"""`kws demo`: the whole journey on built-in synthetic data, with the engine's own functions —
synthesize → teacher → distil (the bundled student's recipe) → int8 and fp16 → evaluate all
against the teacher (ratios, PASS/FAIL, the trade-off plot) → calibrate the fp16 student's
threshold on keyword-free audio → detect the keyword in a recording made for the purpose. Each
stage reports through `say`; nothing here prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# (clips, teacher epochs, student epochs, clips per epoch, recording seconds, negatives seconds)
SIZES = {"full": (6000, 6, 12, 4096, 40.0, 300.0), "fast": (600, 2, 2, 512, 12.0, 30.0)}
# the bundled student's recipe (examples/student-voices.yaml), at demo size
STUDENT = {
    "model": {"cnn_out_channels": 3, "kernel_size": [7, 12], "stride": [7, 5],
              "hidden_size": 16, "gru_num_layers": 1},
    "train": {"learning_rate": 3e-3, "lr_schedule": "cosine", "augment": False},
    "distill": {"loss": "kl", "temperature": 4.0, "attention_weight": 1.0},
}  # fmt: skip


@dataclass
class DemoResult:
    reports: list = field(default_factory=list)  # evaluate's ModelReport per model
    baseline: object = None
    targets: object = None
    recording: Path | None = None
    keyword_times: list[float] = field(default_factory=list)
    detections: list = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    calibration: object = None


def run_demo(out: Path, fast: bool = False, say: Callable[[str], None] = print) -> DemoResult:
    from kwscli.calibrate import calibrate
    from kwscli.compress import compress_checkpoint
    from kwscli.config import RunConfig, build_config
    from kwscli.data.recording import make_recording
    from kwscli.data.synthetic import synthesize_dataset
    from kwscli.detect import Spotter
    from kwscli.evaluate import Targets, check_targets, evaluate_checkpoint
    from kwscli.extras import check
    from kwscli.student import student_config
    from kwscli.train import train_run

    for module in ("espeakng_loader", "matplotlib"):  # before any work, not at stage 5
        check(module)
    clips, t_epochs, s_epochs, epoch_size, seconds, negatives = SIZES["fast" if fast else "full"]
    out = Path(out)
    data, runs = out / "data", out / "runs"
    result = DemoResult()

    say(f"1/7 synthesizing {clips:,} one-second clips (espeak-ng) → {data}")
    synthesize_dataset(data, num_clips=clips, seed=0, keyword_fraction=0.08)

    say(f"2/7 training the teacher ({t_epochs} epochs of {epoch_size:,} clips)")
    common = {"runs_dir": str(runs), "data": {"path": str(data)}}
    teacher_cfg = build_config(RunConfig, overrides={
        **common, "name": "teacher",
        "train": {"num_epochs": t_epochs, "epoch_size": epoch_size, "learning_rate": 3e-3},
    })  # fmt: skip
    teacher = train_run(teacher_cfg, force=True).checkpoint
    result.files["teacher"] = teacher

    say(f"3/7 distilling a student (KL, T=4, attention; {s_epochs} epochs)")
    student_over = {**common, "name": "student", **STUDENT}
    student_over["train"] = {**STUDENT["train"], "num_epochs": s_epochs, "epoch_size": epoch_size}
    student_over["distill"] = {**STUDENT["distill"], "teacher": str(teacher)}
    student_cfg, _ = student_config(None, student_over)
    student = train_run(student_cfg, force=True).checkpoint
    result.files["student"] = student

    say("4/7 compressing the student: int8 and fp16")
    for kind in ("int8", "fp16"):
        compress_checkpoint(student, kind, force=True)
        result.files[kind] = student.with_suffix(f".{kind}.pt")

    say("5/7 evaluating every model against the teacher (val split)")
    result.baseline = evaluate_checkpoint(teacher, latency=False)
    result.targets = Targets()
    for name in ("student", "int8", "fp16"):
        report = evaluate_checkpoint(result.files[name], latency=False)
        report.targets = check_targets(report, result.baseline, result.targets)
        result.reports.append(report)

    say(f"6/7 calibrating the fp16 student on {negatives / 60:.1f} min of keyword-free audio")
    quiet = out / "negatives.wav"
    make_recording(quiet, negatives, keyword_times=(), seed=11)
    calibrated = result.files["fp16"].with_suffix(".calibrated.pt")
    result.calibration = calibrate(
        result.files["fp16"], quiet, 1.0, calibrated, state="window", force=True
    )
    result.files["detector"] = calibrated

    say(f"7/7 detecting the keyword in a {seconds:.0f} s recording made for the demo")
    result.recording = out / "recording.wav"
    times = tuple(float(t) for t in range(5, int(seconds) - 2, 12))
    events = make_recording(result.recording, seconds, keyword_times=times, seed=7,
                            clear_keyword=True)  # fmt: skip
    result.keyword_times = [e.start for e in events if e.keyword]
    result.detections = Spotter(calibrated).detect(result.recording)
    return result
