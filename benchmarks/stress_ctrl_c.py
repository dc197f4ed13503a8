"""Ctrl-C at random moments: `kws teacher` must always exit 130 with its one-line message.

Each trial starts a small teacher run, waits for epoch 1 to be on disk, sleeps a random 0..MAX
seconds (landing in epoch 2's steps, or in epoch 1's saving and first plot, which imports
matplotlib) and sends one SIGINT. Any other exit code is printed with the run's stderr.

    python benchmarks/stress_ctrl_c.py --trials 25 --max-delay 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import make_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=25)
    ap.add_argument("--max-delay", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kws-ctrl-c-"))
    data = make_dataset(root / "ds", {"sheila": 60, "yes": 60, "no": 60})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    bad = 0
    for i in range(args.trials):
        runs = root / "runs"
        shutil.rmtree(runs, ignore_errors=True)
        cmd = [sys.executable, "-m", "kwscli", "teacher", "--data", str(data), "--runs-dir",
               str(runs), "--name", "cut", "--epochs", "3", "--batch-size", "32",
               "--hidden-size", "8", "--epoch-size", "3200", "--seed", "3"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        history = runs / "cut" / "history.json"
        while True:
            try:
                if json.loads(history.read_text()):
                    break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None:
                sys.exit(f"trial {i}: the run ended before epoch 1: {proc.communicate()[1]}")
            time.sleep(0.01)
        delay = rng.uniform(0, args.max_delay)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        if proc.returncode != 130:
            bad += 1
            print(f"trial {i}, SIGINT {delay:.3f} s after epoch 1: exit {proc.returncode}\n{err}")
    shutil.rmtree(root, ignore_errors=True)
    print(f"{args.trials - bad} of {args.trials} trials exited 130 with the interrupt message")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
