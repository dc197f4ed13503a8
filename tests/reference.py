"""Reference implementations the package is tested against, not part of it: the course's loop
for au_fa_fr (the oracle of `kwscli.metrics.au_fa_fr`, also benchmarked) and the batch loop
that found detections before `DetectionTracker`."""

from __future__ import annotations

import numpy as np

from kwscli.detections import Detection


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


def find_detections_reference(
    times: np.ndarray,
    probs: np.ndarray,
    focus: np.ndarray,
    threshold: float,
    refractory: float,
    window_s: float,
) -> list:
    """The batch loop `kws detect` used before detections were found block by block, kept as
    the reference `DetectionTracker` is tested against."""
    above = np.flatnonzero(probs >= threshold)
    if above.size == 0:
        return []
    runs: list[list[int]] = [[int(above[0]), int(above[0])]]
    for i in above[1:]:
        if times[i] - times[runs[-1][1]] <= refractory:
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    out = []
    for a, b in runs:
        peak = a + int(np.argmax(probs[a : b + 1]))
        start, end = max(0.0, float(times[a]) - window_s), float(times[b])
        # attention can rest on the silence before a file starts: keep the time inside the span
        when = min(max(float(focus[peak]), start), end)
        out.append(Detection(start=start, end=end, time=when, peak=float(probs[peak])))
    return out
