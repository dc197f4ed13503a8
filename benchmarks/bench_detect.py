"""`kws detect` on long recordings: speed, memory and false alarms per hour.

    python benchmarks/bench_detect.py make     # two keyword-free hours (calibration, test)
    python benchmarks/bench_detect.py speed  --model kwscli/assets/student.pt
    python benchmarks/bench_detect.py fa     --model kwscli/assets/student.pt
    python benchmarks/bench_detect.py peers    # kws (torch, runtime) beside pymicro-wakeword
    python benchmarks/bench_detect.py startup  # kws detect on a 1 s file: start to output

`make` writes data/negatives/calibration.wav (seed 101) and data/negatives/test.wav (seed 202):
one hour each of synthetic speech (never the keyword) over pink noise. Calibrate on the first,
count false alarms on the second, so the FA/h is measured on audio the threshold never saw.
`speed` runs the real CLI in a subprocess on the test hour and reports wall time, real-time
factor and peak memory (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

NEG = Path("data/negatives")


def make(seconds: float) -> None:
    from kwscli.data.recording import make_recording

    NEG.mkdir(parents=True, exist_ok=True)
    for name, seed in (("calibration", 101), ("test", 202)):
        t0 = time.perf_counter()
        events = make_recording(NEG / f"{name}.wav", seconds, keyword_times=(), seed=seed)
        print(
            f"{name}.wav: {seconds / 3600:.2f} h, {len(events)} utterances, "
            f"{time.perf_counter() - t0:.0f} s to make"
        )


def speed(model: str, state: str) -> None:
    wav = NEG / "test.wav"
    cmd = [
        sys.executable,
        "-m",
        "kwscli",
        "detect",
        str(wav),
        "--model",
        model,
        "--json",
        "--state",
        state,
        "--threshold",
        "0.5",
    ]
    base = _child_peak_mib([sys.executable, "-c", "import torch, kwscli.detect"])
    walls = []
    for _ in range(3):  # the median of three runs: single runs vary by ±10 % here
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
    wall = sorted(walls)[1]
    peak = _child_peak_mib(None)
    (res,) = json.loads(out.stdout)
    audio = res["duration_s"]
    print(
        f"model {model} ({state}): {audio / 3600:.2f} h of audio in {wall:.1f} s wall, median of "
        f"{', '.join(f'{w:.1f}' for w in walls)} "
        f"(whole CLI, start-up included) = {audio / wall:,.0f}x real time; "
        f"peak RSS {peak:.0f} MiB, of which importing torch and kwscli alone takes {base:.0f} MiB"
    )


def _child_peak_mib(cmd: list[str] | None) -> float:
    """Peak RSS of a child: run `cmd` in a fresh process (so earlier children do not count), or
    read this process's children so far when `cmd` is None."""
    if cmd is None:
        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip()) / 1024


PYMICRO = """
import sys, wave
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
mww, feats = MicroWakeWord.from_builtin(Model.OKAY_NABU), MicroWakeWordFeatures()
hits = 0
with wave.open(sys.argv[1], "rb") as w:
    while chunk := w.readframes(16000):
        for f in feats.process_streaming(chunk):
            hits += bool(mww.process_streaming(f))
print(hits)
"""


def peers(rounds: int = 5) -> None:
    """The same hour through every detector at hand, each a whole process: kws
    detect with torch, kws detect on the torch-free runtime (the bundled student's ONNX copies,
    window and carry), and pymicro-wakeword (microWakeWord, TFLite int8, its bundled okay_nabu)
    where installed; `rounds` runs of each, taken in turn. Then start-up: each kws path on a 1 s
    file, median of 5."""
    import importlib.util

    wav = str(NEG / "test.wav")
    kws = [sys.executable, "-m", "kwscli", "detect", wav, "--json"]
    contenders = [
        ("kws detect, torch (bundled student, fp16)", kws),
        ("kws detect, runtime (student.onnx, window)", [*kws, "--model", _onnx()]),
        ("kws detect, runtime (student.carry.onnx)", [*kws, "--model", _onnx(".carry.onnx")]),
    ]
    if importlib.util.find_spec("pymicro_wakeword"):
        contenders.append(
            ("pymicro-wakeword (okay_nabu, TFLite)", [sys.executable, "-c", PYMICRO, wav])
        )
    else:
        print("pymicro-wakeword not installed: skipped (pip install pymicro-wakeword)")
    print("openwakeword: skipped (its models are downloaded at first use; no network here)")
    # round-robin, so a machine whose speed drifts (a shared host) slows every contender alike;
    # the ratio to pymicro-wakeword is taken round by round, then the median
    runs = {name: [] for name, _ in contenders}
    for _ in range(rounds):
        for name, cmd in contenders:
            runs[name].append(_timed_child(cmd))
    ref = next((n for n in runs if n.startswith("pymicro")), None)
    print(f"{'detector':46s} {'real time':>10s} {'peak RSS':>9s} {'vs pymicro':>11s}")
    for name, rs in runs.items():
        wall = _median([w for w, _ in rs])
        ratio = "-"
        if ref:
            pairs = zip(rs, runs[ref], strict=True)
            ratio = f"{_median([r[0] / w for (w, _), r in pairs]):.2f}x"
        print(
            f"{name:46s} {3600 / wall:9,.0f}x {max(m for _, m in rs):6.0f} MiB {ratio:>11s}"
            f"   ({wall:.2f} s, median of {rounds})"
        )
    startup()


def startup() -> None:
    """Start to output: `kws detect` on a 1 s file, whole process, median of 5."""
    import tempfile

    import soundfile as sf

    from kwscli.bundled import bundled_example

    audio, rate = sf.read(bundled_example(), dtype="float32", frames=16000)
    with tempfile.TemporaryDirectory() as tmp:
        one = str(Path(tmp) / "one_second.wav")
        sf.write(one, audio, rate)
        kws = [sys.executable, "-m", "kwscli", "detect", one, "--json"]
        for name, cmd in (
            ("torch", kws),
            ("runtime, window", [*kws, "--model", _onnx()]),
            ("runtime, carry", [*kws, "--model", _onnx(".carry.onnx")]),
        ):
            runs = sorted(_timed_child(cmd) for _ in range(5))
            print(f"start-up, {name:16s} {runs[2][0]:.2f} s, peak {runs[2][1]:.0f} MiB (1 s file)")


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _onnx(suffix: str = ".onnx") -> str:
    return str(Path(__file__).resolve().parents[1] / "kwscli" / "assets" / f"student{suffix}")


def _timed_child(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `cmd`, run in a fresh process."""
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True
    )
    wall, rss = out.stdout.split()
    return float(wall), int(rss) / 1024


def false_alarms(model: str, state: str) -> None:
    from kwscli.checkpoint import load_checkpoint
    from kwscli.detect import detect_files

    ckpt = load_checkpoint(model)
    run = detect_files([NEG / "test.wav"], Path(model), None, state)
    (res,) = run.results
    hours = res.duration / 3600
    print(
        f"model {model}: threshold {run.settings['threshold']:.6g} "
        f"({run.settings['threshold_from']}), {len(res.detections)} false alarms in "
        f"{hours:.2f} h = {len(res.detections) / hours:.2f} FA/h on unseen keyword-free audio"
    )
    cal = ckpt.provenance.calibration
    if cal:
        print(
            f"  calibrated on {cal['hours']:.2f} h: {cal['fa_per_hour']:.2f} FA/h there; "
            f"FRR {cal['frr']} on {cal['positives']} val keyword clips"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["make", "speed", "fa", "peers", "startup"])
    ap.add_argument("--model", default="kwscli/assets/student.pt")
    ap.add_argument("--state", default="window")
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--rounds", type=int, default=5, help="peers: runs of each detector")
    args = ap.parse_args()
    if args.what == "make":
        make(args.seconds)
    elif args.what == "speed":
        speed(args.model, args.state)
    elif args.what == "peers":
        peers(args.rounds)
    elif args.what == "startup":
        startup()
    else:
        false_alarms(args.model, args.state)


if __name__ == "__main__":
    main()
