"""Quality and cost of a model: au_fa_fr, FRR at a false-alarm rate, size, MACs, latency.

Each quantity has exactly one function here; evaluate, runs, quantize and fp16 all call these.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass

import numpy as np

# P(keyword) at which a model says "keyword" when no calibrated threshold is known: the two-class
# softmax's own decision boundary. Calibration never goes below it.
DEFAULT_THRESHOLD = 0.5


def error_counts(probs, labels, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """False alarms #(p ≥ t, label 0) and false rejects #(p < t, label 1) at each threshold,
    by binary search into the sorted scores: O((N + len(thresholds)) log N)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if p.shape != y.shape:
        raise ValueError(f"probs has {p.size} values but labels has {y.size}")
    neg, pos = np.sort(p[~y]), np.sort(p[y])
    fa = neg.size - np.searchsorted(neg, thresholds, side="left")
    fr = np.searchsorted(pos, thresholds, side="left")
    return fa, fr


def au_fa_fr(probs, labels) -> float:
    """Area under the FA/FR curve (SPEC §2), lower is better, in O(N log N).

    Same definition as the course's loop (`tests/reference.py`): thresholds = [0] + sorted(p) + [1];
    FA(t) = #(p ≥ t, label 0) / N and FR(t) = #(p < t, label 1) / N, both over N = all clips;
    result = −trapezoid(FR, x=FA). A repeated threshold adds a zero-width trapezoid, so only the
    distinct thresholds matter.
    """
    p = np.asarray(probs, dtype=np.float64).ravel()
    if p.size == 0:
        raise ValueError("au_fa_fr of an empty set")
    thresholds = np.unique(np.concatenate(([0.0], p, [1.0])))
    fa, fr = error_counts(p, labels, thresholds)
    fa, fr = fa / p.size, fr / p.size
    return float(np.sum((fa[:-1] - fa[1:]) * (fr[1:] + fr[:-1]) / 2.0))  # FA falls as t rises


def fa_fr_curve(probs, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR over negatives, FRR over positives) at every distinct score, plus one
    threshold above all scores (nothing fires)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    t = np.unique(np.concatenate(([0.0], p, [np.nextafter(1.0, 2.0)])))
    fa, fr = error_counts(p, y, t)
    return t, fa / max(int((~y).sum()), 1), fr / max(int(y.sum()), 1)


@dataclass
class OperatingPoint:
    """At `threshold`: false-alarm rate over negatives (far), false-reject rate over positives."""

    target_far: float
    threshold: float
    far: float
    frr: float


def frr_at_far(probs, labels, target_far: float) -> OperatingPoint:
    """The lowest threshold whose false-alarm rate is ≤ target, and the FRR there. When even a
    negative scores 1.0, only a threshold just above 1 (nothing fires) qualifies, and is returned
    as such, so `p >= threshold` always reproduces the reported rates."""
    t, far, frr = fa_fr_curve(probs, labels)
    i = int(np.flatnonzero(far <= target_far)[0])  # the last threshold always qualifies
    return OperatingPoint(target_far, float(t[i]), float(far[i]), float(frr[i]))


def roc_auc(probs, labels) -> float:
    """P(a random keyword clip scores above a random other clip), ties counted half: the
    Mann-Whitney U statistic over n_pos·n_neg, from average ranks in O(N log N)."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs keyword and other clips")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(p.size)
    # average rank (1-based) of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], p.size]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def recall_at_far(probs, labels, target_far: float) -> float:
    """Share of keyword clips detected at the lowest threshold whose false-alarm rate over the
    other clips is ≤ `target_far` (1 − the FRR of `frr_at_far`)."""
    return 1.0 - frr_at_far(probs, labels, target_far).frr


def accuracy(probs, labels, threshold: float = DEFAULT_THRESHOLD) -> float:
    p = np.asarray(probs).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    return float(np.mean((p >= threshold) == y))


# ---------------------------------------------------------------- cost


def size_bytes(model) -> int:
    """Bytes of `torch.save(model.state_dict())`: the course's memory measure."""
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def count_macs(model, n_mels: int, frames: int) -> int:
    """MACs of one forward pass on a (1, n_mels, frames) log-mel, counted by thop.

    thop adds `total_ops`/`total_params` buffers and hooks to what it profiles, so it profiles a
    deep copy: the caller's model (and its state_dict) is left untouched. Dtypes are normalised
    to float32 so fp16 models count the same as their float originals.
    """
    import warnings

    import torch

    probe = copy.deepcopy(model).float().eval()
    x = torch.zeros(1, n_mels, frames)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # thop uses distutils' LooseVersion
        from thop import profile

        ops = {torch.nn.Conv2d: _conv_macs}
        macs, _ = profile(probe, inputs=(x,), custom_ops=ops, verbose=False)
    return int(macs)


def _conv_macs(module, inputs, output) -> None:
    """thop's documented conv count, N·C_out·H·W·(C_in/groups·k_h·k_w + bias).

    thop 0.1.1's default hook drops the bias term; counting it reproduces the course's figures
    (teacher: 933,808 MACs on 1 s, 1,952,368 on 2 s).
    """
    import torch

    per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
    per_output += 1 if module.bias is not None else 0
    module.total_ops += torch.DoubleTensor([output.numel() * per_output])


def latency_ms(model, n_mels: int, frames: int, repeats: int = 50, dtype=None) -> float:
    """Median CPU wall time (ms) of one forward pass on one clip, single thread, after warm-up."""
    import torch

    from kwscli.models.crnn import input_dtype

    dtype = dtype or input_dtype(model)
    x = torch.randn(1, n_mels, frames, dtype=dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times) * 1000.0)
