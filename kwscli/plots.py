"""Plots, written as PNG files beside the results: P(keyword) over time (`kws detect --plot`),
training curves (redrawn each epoch), the FA/FR curves and the size/accuracy trade-off. Needs
matplotlib (`pip install "kws[plot]"`: a one-line error without it)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_trace(results: list, settings: dict, out: Path) -> list[Path]:
    """P(keyword) over time per file, threshold and detections marked. Several files: one PNG
    each, named OUT-<file stem>.png (files.trace_plot_paths)."""
    from kwscli.files import trace_plot_paths

    plt = _pyplot()
    written = []
    paths = trace_plot_paths(out, [r.path for r in results])
    for r, path in zip(results, paths, strict=True):
        if r.times is None:
            continue
        fig, ax = plt.subplots(figsize=(max(8, min(30, r.duration / 4)), 3))
        ax.plot(r.times, r.probs, lw=1)
        ax.axhline(settings["threshold"], color="C3", ls="--", lw=1, label="threshold")
        for d in r.detections:
            ax.axvspan(d.start, d.end, color="C2", alpha=0.15)
            ax.axvline(d.time, color="C2", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"P({settings['keyword']})")
        ax.set_title(f"{Path(r.path).name}: {len(r.detections)} detection(s)")
        ax.legend(loc="upper right", fontsize=8)
        _save(fig, path)
        written.append(path)
    return written


def _pyplot():
    from kwscli.extras import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from kwscli.files import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def _model_label(report) -> str:
    """A plot label that tells models apart: run folder / file, and the kind
    (`student/model.pt (fp16)`, not three times `model.pt`)."""
    path = Path(report.path)
    return f"{path.parent.name}/{path.name} ({report.label})"


def plot_history(history_json: Path, out: Path) -> None:
    """Training curves: losses and val au_fa_fr (log scale) per epoch."""
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, MaxNLocator

    hist = json.loads(Path(history_json).read_text())
    epochs = [h["epoch"] for h in hist]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    # the training loss (a distillation loss, for a student) and the validation cross-entropy
    # are different quantities, often orders of magnitude apart: one axis each
    ax1.plot(epochs, [h["train_loss"] for h in hist], "o-", color="C0", label="train loss")
    ax1.set_ylabel("train loss", color="C0")
    twin = ax1.twinx()
    twin.plot(epochs, [h["val_loss"] for h in hist], "s-", color="C1", label="val CE")
    twin.set_ylabel("val cross-entropy", color="C1")
    ax1.set_xlabel("epoch")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.grid(alpha=0.3)
    scores = [max(h["val_au_fa_fr"], 1e-9) for h in hist]
    ax2.semilogy(epochs, scores, "o-", color="C2")
    best = min(range(len(scores)), key=scores.__getitem__) if scores else None
    if best is not None:
        ax2.axvline(epochs[best], color="C3", ls="--", lw=1)
        ax2.annotate(f"best: epoch {epochs[best]}", (epochs[best], scores[best]), fontsize=8,
                     xytext=(5, 8), textcoords="offset points", color="C3")  # fmt: skip
    ax2.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val au_fa_fr (lower is better)")
    ax2.grid(alpha=0.3, which="both")
    _save(fig, out)


def _label_points(ax, points: list[tuple[float, float, str]], top: float) -> float:
    """Name each point without two names on top of each other: labels that would collide (models
    of the same cost and close au_fa_fr) are moved up in turn, a thin line to their point.
    Returns the height the axis needs to show them all."""
    gap = top * 0.055  # one line of 7-point text on a 4.2-inch-high axis
    placed = -float("inf")
    for x, y, text in sorted(points, key=lambda p: p[1]):
        at = max(y, placed + gap)
        placed = at
        moved = at - y > gap / 4
        ax.annotate(
            text,
            (x, y),
            xytext=(6, at),
            textcoords=("offset points", "data"),
            fontsize=7,
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if moved else None,
        )
    return max(top, placed + gap)


def plot_tradeoff(reports: list, baseline, targets, out: Path) -> Path:
    """The course's two plots: au_fa_fr vs MACs and vs memory, one point per model, with the
    baseline and the target region (≤ baseline/target cost, ≤ target × baseline au_fa_fr)."""
    from matplotlib.ticker import NullFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    limit = baseline.au_fa_fr * targets.au_fa_fr
    for ax, attr, ratio, label in (
        (axes[0], "macs_2s", targets.macs, "MACs (2 s of audio)"),
        (axes[1], "size_bytes", targets.memory, "memory (bytes of state_dict)"),
    ):
        x0 = getattr(baseline, attr)
        ax.scatter([x0], [baseline.au_fa_fr], marker="*", s=160, color="k", label="baseline")
        top = max([limit, baseline.au_fa_fr] + [r.au_fa_fr for r in reports]) * 1.15
        for i, r in enumerate(reports):
            ax.scatter([getattr(r, attr)], [r.au_fa_fr], s=40, color=f"C{i % 10}")
        points = [(getattr(r, attr), r.au_fa_fr, _model_label(r)) for r in reports]
        top = _label_points(ax, points, top)
        xs = [x0 / ratio, x0] + [getattr(r, attr) for r in reports]
        lo = min(xs) / 2
        ax.fill_between(
            [lo, x0 / ratio],
            0,
            limit,
            color="C2",
            alpha=0.15,
            label=f"target: ≤ 1/{ratio:g} of the cost, ≤ {targets.au_fa_fr:g}× the au_fa_fr",
        )
        ax.set_xlim(lo, max(xs) * 2)
        ax.set_ylim(0, top)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short ranges
        ax.set_xlabel(label)
        ax.set_ylabel("au_fa_fr (lower is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    _save(fig, out)
    return out


def plot_fa_fr(reports: list, out: Path) -> None:
    """FA/FR trade-off of each model: false-reject rate vs false-alarm rate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in reports:
        ax.plot(r.curve["fa"], r.curve["fr"], label=f"{_model_label(r)} ({r.au_fa_fr:.2e})")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("false-alarm rate (over non-keyword clips)")
    ax.set_ylabel("false-reject rate (over keyword clips)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"FA/FR on {reports[0].split}")
    _save(fig, out)


class PlottingCallbacks:
    """Passes events on and redraws the training curves beside the checkpoint each epoch."""

    def __init__(self, inner, run_dir: Path) -> None:
        from kwscli.engine import NoCallbacks

        self.inner = inner or NoCallbacks()
        self.run_dir = run_dir

    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.inner.on_start(epochs, steps_per_epoch, start_epoch)

    def on_step(self, epoch: int, step: int, loss: float) -> None:
        self.inner.on_step(epoch, step, loss)

    def on_epoch_end(self, record) -> None:
        from kwscli.engine import HISTORY
        from kwscli.extras import installed

        if not installed("matplotlib"):  # the curves are a view of history.json, which is kept
            return self.inner.on_epoch_end(record)
        plot_history(self.run_dir / HISTORY, self.run_dir / "curves.png")
        self.inner.on_epoch_end(record)
