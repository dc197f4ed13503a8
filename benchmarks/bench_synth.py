"""Time the synthetic dataset generator at Speech Commands v0.01 size (target: ≤ 10 min on 2 cores).

python benchmarks/bench_synth.py --clips 64727 --out /tmp/kws-synth-bench
python benchmarks/bench_synth.py --clips 64727 --engines espeak,hibari,flite --neural-share 0.3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from kwscli.data.synthetic import synthesize_dataset


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes in files, bytes of disk blocks) under `root`."""
    size = blocks = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            size += st.st_size
            blocks += st.st_blocks * 512
    return size, blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64727)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kws-synth-bench"))
    parser.add_argument("--workers", type=int, default=None, help="default: all CPUs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the dataset afterwards")
    parser.add_argument("--engines", default="espeak", help="comma-separated, as kws data synth")
    parser.add_argument("--neural-share", type=float, default=0.25)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  {done}/{total} clips, {now - start:.0f} s", file=sys.stderr, flush=True)

    start = time.perf_counter()
    report = synthesize_dataset(
        args.out,
        num_clips=args.clips,
        seed=args.seed,
        workers=args.workers,
        progress=progress,
        engines=args.engines.split(","),
        neural_share=args.neural_share,
    )
    seconds = time.perf_counter() - start
    size, blocks = disk_usage(args.out)
    print(f"clips      {report.clips}")
    print(f"workers    {args.workers or os.cpu_count()}")
    print(f"seconds    {seconds:.1f}")
    print(f"clips/s    {report.clips / seconds:.1f}")
    print(f"bytes      {size} ({size / 2**30:.2f} GiB; {blocks / 2**30:.2f} GiB on disk)")
    print(f"speakers   {report.speakers} ({report.voices} voices; {report.per_engine})")
    print(f"keyword    {report.per_word.get('sheila', 0)} clips")
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
