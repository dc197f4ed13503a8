"""When does fp16 hurt a student? Each run's float model against its fp16 copy on the val split:
the logits' scale (what half precision has to hold), how far fp16 moves P(keyword), and au_fa_fr.

    python benchmarks/fp16_logits.py runs/seed/student-mse runs/seed/student-kl-T4 ...

Each RUN folder needs model.pt and model.fp16.pt (`compress: [fp16]` in a sweep, or `kws fp16`).
fp16 keeps ~3 significant digits: a logit of 20 is stored to ±0.008, one of 2 to ±0.001, and the
keyword's probability is a softmax of logit differences, so what matters is how large the logits
are where P(keyword) sits near the threshold, not only how large they are overall. The last two
columns show what a naive fp16 deployment loses by taking the softmax in fp16 as well (kws takes
it in float32): P(keyword) rounds to exactly 1.0 and those clips can no longer be ranked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kwscli.checkpoint import load_checkpoint
from kwscli.evaluate import load_split
from kwscli.inference import build_model, predict_logits, probabilities
from kwscli.metrics import au_fa_fr


def describe(run: Path) -> dict:
    ckpt, half = load_checkpoint(run / "model.pt"), load_checkpoint(run / "model.fp16.pt")
    data = load_split(ckpt)
    logits = predict_logits(build_model(ckpt), data.features)
    logits_16 = predict_logits(build_model(half), data.features)
    p, p16 = probabilities(logits), probabilities(logits_16)
    # a naive fp16 deployment takes the softmax in fp16 too: P rounds to exactly 1.0 once the
    # margin passes ~8.3 (1 - P below half of fp16's spacing under 1), and those clips tie
    p16_naive = torch.softmax(logits_16.half(), dim=-1)[:, 1].double()
    margin = (logits[:, 1] - logits[:, 0]).numpy()  # what P(keyword) is the sigmoid of
    near = (p > 0.01) & (p < 0.99)  # where a change in the last digits can move a decision
    labels = torch.as_tensor(data.labels)
    return {
        "run": run.name,
        "loss": ckpt.provenance.distill.loss.value if ckpt.provenance.distill else "ce",
        "logit_abs_p99": float(np.percentile(np.abs(logits.numpy()), 99)),
        "margin_std": float(margin.std()),
        "max_dp": float(np.abs(p - p16).max()),
        "mean_dp_near": float(np.abs(p - p16)[near].mean()) if near.any() else 0.0,
        "au_fa_fr": au_fa_fr(torch.as_tensor(p), labels),
        "au_fa_fr_fp16": au_fa_fr(torch.as_tensor(p16), labels),
        "au_fa_fr_fp16_softmax": au_fa_fr(p16_naive, labels),
        "saturated": float((p16_naive == 1.0).double().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print(
        f"{'run':28s} {'loss':5s} {'|logit| p99':>11s} {'margin sd':>9s} {'max |dP|':>9s} "
        f"{'mean |dP| (0.01<P<0.99)':>24s} {'au_fa_fr':>9s} {'fp16':>9s} {'ratio':>6s} "
        f"{'fp16 softmax':>12s} {'P == 1':>7s}"
    )
    for run in args.runs:
        r = describe(run)
        ratio = r["au_fa_fr_fp16"] / r["au_fa_fr"] if r["au_fa_fr"] else float("nan")
        print(
            f"{r['run']:28s} {r['loss']:5s} {r['logit_abs_p99']:11.2f} {r['margin_std']:9.2f} "
            f"{r['max_dp']:9.2e} {r['mean_dp_near']:24.2e} {r['au_fa_fr']:9.3e} "
            f"{r['au_fa_fr_fp16']:9.3e} {ratio:6.3f} {r['au_fa_fr_fp16_softmax']:12.3e} "
            f"{r['saturated']:7.1%}"
        )


if __name__ == "__main__":
    main()
