"""The course's reference loop for au_fa_fr, kept verbatim as the oracle `kwscli.metrics.au_fa_fr`
is tested (and benchmarked) against; it is not part of the package."""

from __future__ import annotations

import numpy as np


def au_fa_fr_reference(probs, labels) -> float:
    """The course's O(N²) loop, kept verbatim as the reference `au_fa_fr` is tested against."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    thresholds = np.concatenate(([0.0], np.sort(p), [1.0]))
    n = len(p)
    fa, fr = [], []
    for t in thresholds:
        pred = p >= t
        fa.append(np.sum(pred & (y == 0)) / n)
        fr.append(np.sum(~pred & (y == 1)) / n)
    return float(-np.trapezoid(fr, x=fa))
