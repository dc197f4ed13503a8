"""Spine benchmarks (issue: data → features → teacher → evaluate), on this machine's CPU.

    python benchmarks/bench_spine.py features --data data/synth-full
    python benchmarks/bench_spine.py epoch    --data data/synth-full
    python benchmarks/bench_spine.py metric

`features` builds the log-mel cache from scratch (a fresh cache folder) and times it; `epoch`
times one teacher epoch (augmentation included) on the cached features, and the bare
forward+backward of the same number of batches for comparison; `metric` times au_fa_fr against
the course's O(N²) loop at N = 13,000 and checks they agree. Synthesis has its own script
(bench_synth.py); the teacher's au_fa_fr comes from `kws teacher` + `kws evaluate` (README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_features(data: Path) -> None:
    from kwscli.config import FeatureConfig
    from kwscli.data.features import cache_key, default_cache_dir, load_features
    from kwscli.data.speech_commands import scan_dataset

    t0 = time.perf_counter()
    index = scan_dataset(data, "sheila")
    t1 = time.perf_counter()
    cache = default_cache_dir()
    stale = cache / f"{index.root.name}-{cache_key(index, FeatureConfig())}.pt"
    stale.unlink(missing_ok=True)  # time a cold build; `epoch` then reuses this cache
    t1 = time.perf_counter()
    fs = load_features(index, FeatureConfig())
    t2 = time.perf_counter()
    fs2 = load_features(index, FeatureConfig())
    t3 = time.perf_counter()
    print(f"clips            {len(fs.paths):,} (skipped {len(fs.skipped)})")
    print(f"index            {t1 - t0:.1f} s")
    print(f"cache build      {t2 - t1:.1f} s   (target ≤ 180 s)")
    print(
        f"cache reload     {t3 - t2:.2f} s  ({tuple(fs2.features.shape)}, "
        f"{stale.stat().st_size / 2**30:.2f} GiB at {stale})"
    )


def bench_epoch(data: Path, batches: int | None) -> None:
    import torch
    import torch.nn.functional as F

    from kwscli import engine
    from kwscli.config import RunConfig
    from kwscli.models.crnn import CRNN
    from kwscli.train import cross_entropy, prepare_data

    cfg = RunConfig.model_validate({"data": {"path": str(data)}, "train": {"num_epochs": 1}})
    prepared = prepare_data(cfg)  # cache already built by `features`
    tr = prepared.train
    n_train = len(tr.train_idx)
    steps = batches or -(-n_train // cfg.train.batch_size)
    if batches:
        cfg.train.epoch_size = batches * cfg.train.batch_size
    print(f"threads          {torch.get_num_threads()}")
    print(f"train clips      {n_train:,}, val {len(tr.val_idx):,}, steps {steps}")

    torch.manual_seed(0)
    model = CRNN(cfg.model, cfg.features.n_mels)
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        res = engine.train(
            model, cross_entropy, tr, cfg.train, Path(run_dir), lambda m: _ckpt(model, cfg, m)
        )
        epoch_s = time.perf_counter() - t0
    print(
        f"epoch (full)     {epoch_s:.1f} s incl. validation; engine says "
        f"{res.history[0].seconds:.1f} s   (target ≤ 30 s)"
    )

    # the same number of batches, bare: random indices, no augmentation, no validation
    model = CRNN(cfg.model, cfg.features.n_mels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    x = torch.randn(cfg.train.batch_size, cfg.features.n_mels, cfg.features.clip_frames)
    y = torch.randint(0, 2, (cfg.train.batch_size,))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"bare fwd+bwd     {time.perf_counter() - t0:.1f} s for {steps} batches")

    gen = torch.Generator().manual_seed(0)
    rows = tr.train_idx[: cfg.train.batch_size]
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.augment(tr.features[rows], tr.energy[rows], gen)
    print(f"augment only     {time.perf_counter() - t0:.1f} s for {steps} batches")


def _ckpt(model, cfg, metrics):
    from kwscli.checkpoint import Checkpoint

    return Checkpoint("teacher", cfg.model, cfg.features, "sheila", model.state_dict(), metrics)


def course_au_fa_fr(probs, labels) -> float:
    """The course notebook's loop, in torch as it was written: one pass over N per threshold."""
    import torch

    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels).long()
    thresholds = torch.cat(
        (
            torch.tensor([0.0], dtype=probs.dtype),
            probs.sort().values,
            torch.tensor([1.0], dtype=probs.dtype),
        )
    )
    fa, fr = [], []
    for t in thresholds:
        pred = probs >= t
        fa.append((pred & (labels == 0)).sum().item() / len(probs))
        fr.append((~pred & (labels == 1)).sum().item() / len(probs))
    return float(-np.trapezoid(fr, x=fa))


def bench_metric(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests/reference.py
    from kwscli.metrics import au_fa_fr
    from tests.reference import au_fa_fr_reference

    rng = np.random.default_rng(0)
    p = rng.random(n)
    p[: n // 10] = np.round(p[: n // 10], 2)  # some ties
    y = rng.random(n) < 0.03
    t0 = time.perf_counter()
    course = course_au_fa_fr(p, y)
    t_course = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = au_fa_fr_reference(p, y)
    t_ref = time.perf_counter() - t0
    reps = 50
    t0 = time.perf_counter()
    for _ in range(reps):
        fast = au_fa_fr(p, y)
    t_fast = (time.perf_counter() - t0) / reps
    print(f"N                {n:,}")
    print(f"course loop      {t_course:.3f} s   (torch, one pass per threshold)")
    print(f"reference loop   {t_ref:.3f} s   (numpy, tests/reference.py)")
    print(
        f"au_fa_fr         {t_fast * 1000:.2f} ms   ({t_course / t_fast:,.0f}x faster than the "
        f"course loop, {t_ref / t_fast:,.0f}x than the numpy loop; target ≥ 500x)"
    )
    print(
        f"|difference|     {abs(ref - fast):.1e} vs numpy loop, {abs(course - fast):.1e} vs "
        f"course loop (value {fast:.6e})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["features", "epoch", "metric"])
    ap.add_argument("--data", type=Path, default=Path("data/synth-full"))
    ap.add_argument("--batches", type=int, default=None, help="epoch: time only this many")
    ap.add_argument("-n", type=int, default=13_000, help="metric: number of scores")
    args = ap.parse_args()
    if args.what == "features":
        bench_features(args.data)
    elif args.what == "epoch":
        bench_epoch(args.data, args.batches)
    else:
        bench_metric(args.n)


if __name__ == "__main__":
    main()
