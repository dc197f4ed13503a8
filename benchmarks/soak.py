"""Soak: 24 hours of generated audio through the detector in one process — does memory stay flat,
throughput steady, and the keyword found as often in the last hour as in the first?

    python benchmarks/soak.py                 # make data/soak/ (once), then both runs
    python benchmarks/soak.py --hours 2       # a shorter soak

One hour of speech-like audio (espeak-ng phrases over pink noise) with the keyword planted every
minute is made once; the day is that hour 24 times, each time at another level (±4 dB) with fresh
pink noise mixed in, written as one 16 kHz wav (2.8 GB). Then:

1. the Python streaming API (`kwscli.load().predict`), fed 0.5 s chunks in this process: per hour,
   its real-time factor, peak RSS so far, and the planted keywords found and false alarms;
2. `kws detect DAY.wav --json` as one process: its RSS sampled every second from /proc, the
   real-time factor, and the keywords found per hour.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "soak"
SR = 16_000


def make(hours: int) -> tuple[Path, list[dict]]:
    from kwscli.data.recording import make_recording, pink_noise

    OUT.mkdir(parents=True, exist_ok=True)
    hour, events_file = OUT / "hour.wav", OUT / "hour.json"
    if not events_file.exists():
        t0 = time.perf_counter()
        events = make_recording(
            hour, 3600, keyword_times=tuple(30.0 + 60 * i for i in range(60)), seed=24,
            clear_keyword=True,
        )  # fmt: skip
        events_file.write_text(json.dumps([e.to_dict() for e in events]))
        print(f"one hour made in {time.perf_counter() - t0:.0f} s")
    events = json.loads(events_file.read_text())
    day = OUT / f"day-{hours}h.wav"
    if not day.exists():
        audio, _ = sf.read(hour, dtype="float32")
        rng = np.random.default_rng(0)
        tmp = day.with_suffix(".tmp.wav")
        with sf.SoundFile(tmp, "w", SR, 1, "PCM_16") as f:
            for _ in range(hours):
                gain = 10 ** (rng.uniform(-4, 4) / 20)
                noise = pink_noise(len(audio), rng) * 0.003
                f.write(np.clip(audio * gain + noise, -1, 1))
        tmp.rename(day)
    return day, events


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def per_hour(times: list[float], events: list[dict], hours: int) -> list[tuple[int, int, int]]:
    """(found, planted, false alarms) per hour of the day, matching detections to the keyword
    events of that hour (± 0.5 s)."""
    from kwscli.data.recording import Event, score_stream

    out = []
    for h in range(hours):
        evs = [Event(e["start"] + 3600 * h, e["end"] + 3600 * h, e["text"], e["keyword"])
               for e in events]  # fmt: skip
        mine = [t for t in times if 3600 * h <= t < 3600 * (h + 1)]
        s = score_stream(mine, evs, 3600)
        out.append((s.found, s.found + s.missed, s.false_alarms))
    return out


def api_run(day: Path, events: list[dict], hours: int) -> None:
    """In its own process (started by main), so its peak RSS is the stream's alone."""
    import kwscli
    from kwscli.detections import REFRACTORY_S, DetectionTracker

    spotter = kwscli.load()
    print(f"API: {spotter.settings()['model']} threshold {spotter.threshold:.4g}, 0.5 s chunks")
    tracker = DetectionTracker(spotter.threshold, REFRACTORY_S, spotter.detector.window_seconds)
    print(" hour   RTF   RSS now MB   peak MB")
    with sf.SoundFile(day) as f:
        for h in range(hours):
            t0 = time.perf_counter()
            for _ in range(7200):  # 0.5 s chunks
                tracker.feed(spotter.detector.process(f.read(SR // 2, dtype="float32")))
            took = time.perf_counter() - t0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{h + 1:5d} {3600 / took:5.0f}x {rss_mb():11.0f} {peak:9.0f}", flush=True)
    tracker.feed(spotter.detector.flush())
    report_hours([d.time for d in tracker.close()], events, hours)


def report_hours(times: list[float], events: list[dict], hours: int) -> None:
    rows = per_hour(times, events, hours)
    print(" hour  found/planted  false alarms")
    for h, (found, planted, fa) in enumerate(rows, 1):
        if h in (1, 2, hours - 1, hours) or hours <= 4:
            print(f"{h:5d}  {found:5d}/{planted:<7d} {fa:5d}")
    total = [sum(col) for col in zip(*rows, strict=True)]
    print(f"  all  {total[0]:5d}/{total[1]:<7d} {total[2]:5d}")


def cli_run(day: Path, events: list[dict], hours: int) -> None:
    t0 = time.perf_counter()
    out_file = OUT / "detect.json"  # a file, not a pipe: the JSON of a day fills a pipe
    with open(out_file, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kwscli", "detect", str(day), "--json"], stdout=sink
        )
    samples = []
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # the process may just have ended
            samples.append((time.perf_counter() - t0, rss_mb(proc.pid)))
        time.sleep(1.0)
    proc.wait()
    took = time.perf_counter() - t0
    dets = json.loads(out_file.read_text())[0]["detections"]
    rss = [r for _, r in samples]
    n = max(1, len(rss) // hours)
    print(f"kws detect: {hours} h in {took:.0f} s ({hours * 3600 / took:.0f}x real time)")
    print(f"  RSS MB: first 1/{hours} of the run max {max(rss[:n]):.0f}, last 1/{hours} max "
          f"{max(rss[-n:]):.0f}, overall max {max(rss):.0f} ({len(rss)} samples)")  # fmt: skip
    step = max(1, len(rss) // 12)
    print("  RSS MB over the run:", " ".join(f"{max(rss[i:i + step]):.0f}"
                                             for i in range(0, len(rss), step)))  # fmt: skip
    report_hours([d["time"] for d in dets], events, hours)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--only", choices=("api", "cli"))
    args = ap.parse_args()
    day, events = make(args.hours)
    if args.only == "api":
        api_run(day, events, args.hours)
        return
    if args.only is None:  # a process of its own: its peak RSS is the stream's, not the making's
        cmd = [sys.executable, __file__, "--hours", str(args.hours), "--only", "api"]
        subprocess.run(cmd, check=True)
    cli_run(day, events, args.hours)


if __name__ == "__main__":
    main()
