"""Everything users read: rich tables and progress, and JSON (the PNG plots are plots.py's). The
core returns data; this module (and the command line, kwscli/cli/) are the only places that
print."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def drop_stdout() -> None:
    """`kws ... | head`: the reader has what it wanted, which is not an error; what is still to
    be written goes to /dev/null (the caller then exits 0)."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def internal_error(exc: Exception) -> str:
    """The line a bug in kws (an exception no user input explains) is reported with."""
    return f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)"


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed stdout (rich's own handler exits 1): `drop_stdout`."""
        drop_stdout()
        raise SystemExit(0)


# Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns: give them room instead.
console = _Console(width=None if sys.stdout.isatty() else 160)
err_console = _Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# `kws -q`: results, warnings and errors only (no progress, epoch lines or "file → path" notes)
_quiet = {"on": False}


def set_quiet(on: bool) -> None:
    _quiet["on"] = on


def info(message: str) -> None:
    """A line about the work rather than its result (a stage starting, where a plot went):
    silenced by `kws -q`."""
    if not _quiet["on"]:
        console.print(message, markup=False, highlight=False, soft_wrap=True)


def _live(console: Console) -> bool:
    """Whether progress is drawn: on a terminal, and not under -q."""
    return console.is_terminal and not _quiet["on"]


# ---------------------------------------------------------------- progress


class TrainingProgress:
    """Engine callbacks drawn as a rich progress bar with live loss, one line per epoch; also the
    feature cache's `progress(done, total)`, in the same display (rich allows one live display)."""

    def __init__(self, console: Console = console) -> None:
        self.console = console
        self.progress = None
        self.task = None
        self.cache_task = None

    def __enter__(self) -> TrainingProgress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.fields[what]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not _live(self.console),
        )
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def cache(self, done: int, total: int | None) -> None:
        """The log-mel cache being built (first run on a dataset only)."""
        if self.cache_task is None:
            self.cache_task = self.progress.add_task(
                "cache", total=total, what="log-mel cache", loss=""
            )
        self.progress.update(self.cache_task, completed=done, total=total)

    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.epochs = epochs
        if self.cache_task is not None:
            self.progress.remove_task(self.cache_task)
        self.task = self.progress.add_task(
            "train", total=steps_per_epoch, what=f"epoch {start_epoch}/{epochs}", loss=""
        )

    def on_step(self, epoch: int, step: int, loss: float) -> None:
        self.progress.update(
            self.task, completed=step, what=f"epoch {epoch}/{self.epochs}", loss=f"loss {loss:.4f}"
        )

    def on_epoch_end(self, r) -> None:
        mark = " [green]best[/]" if r.best else ""
        real = ""
        if r.select_au_fa_fr is not None:
            real = (
                f"  select au_fa_fr {r.select_au_fa_fr:.3e} AUC {r.select_roc_auc:.4f} "
                f"recall@1% {r.select_recall_1pct:.2f}"
            )
        if _quiet["on"]:
            return self.progress.reset(self.task)
        self.progress.console.print(
            f"epoch {r.epoch:>3}/{self.epochs}  train loss {r.train_loss:.4f}  "
            f"val loss {r.val_loss:.4f}  val au_fa_fr {r.val_au_fa_fr:.3e}  "
            f"acc {r.val_accuracy:.4f}{real}  {r.seconds:.1f}s{mark}"
        )
        self.progress.reset(self.task)


class CountProgress:
    """`progress(done, total)` callbacks (feature cache, synthesis, download) as a rich bar."""

    def __init__(self, description: str, console: Console = console, unit_bytes: bool = False):
        self.description = description
        self.console = console
        self.unit_bytes = unit_bytes

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        cols = [TextColumn(self.description), BarColumn()]
        cols += (
            [DownloadColumn(), TransferSpeedColumn()] if self.unit_bytes else [MofNCompleteColumn()]
        )
        self.progress = Progress(
            *cols,
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not _live(self.console),
        )
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=None)
        return self

    def __call__(self, done: int, total: int | None) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


# ---------------------------------------------------------------- tables


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def evaluation_table(reports: list, baseline=None, width: int | None = None) -> Table:
    title = f"evaluation on {reports[0].split} of {escape(reports[0].data)}"
    if baseline is not None:
        t = reports[0].targets["targets"]
        title += (
            f"\nvs {escape(baseline.path)} (au_fa_fr {baseline.au_fa_fr:.3e}): targets memory ≥ "
            f"{t['memory']:g}x, MACs ≥ {t['macs']:g}x, au_fa_fr ≤ {t['au_fa_fr']:g}x "
            "(ratios: memory and MACs teacher ÷ model, au_fa_fr model ÷ teacher)"
        )
    # (header, keep): the lowest `keep` goes first when the terminal is too narrow
    cols = [("model", 9), ("kind", 8), ("clips (kw)", 2), ("au_fa_fr", 9), ("ROC AUC", 3),
            ("acc", 1), ("FRR@FAR", 4), ("params", 5), ("bytes", 6), ("MACs 1s", 0),
            ("MACs 2s", 5), ("ms/clip", 3)]  # fmt: skip
    if baseline is not None:
        cols += [("mem ×", 7), ("MACs ×", 7), ("au_fa_fr ×", 7), ("verdict", 9)]
    rows = []
    for r in reports:
        ops = " ".join(f"{o['frr']:.3f}@{o['target_far']:g}" for o in r.operating_points)
        row = [
            escape(r.path),
            r.label,
            f"{_fmt_int(r.clips)} ({r.keyword_clips})",
            f"{r.au_fa_fr:.3e}",
            "-" if math.isnan(r.roc_auc) else f"{r.roc_auc:.4f}",
            f"{r.accuracy:.4f}",
            ops,
            _fmt_int(r.params),
            _fmt_int(r.size_bytes),
            _fmt_int(r.macs_1s),
            _fmt_int(r.macs_2s),
            "-" if math.isnan(r.latency_ms) else f"{r.latency_ms:.2f}",
        ]
        if baseline is not None:
            t, ok = r.targets, r.targets["pass"]
            row += [
                _mark(f"{t['memory_ratio']:.2f}", ok["memory"]),
                _mark(f"{t['macs_ratio']:.2f}", ok["macs"]),
                _mark(f"{t['au_fa_fr_ratio']:.2f}", ok["au_fa_fr"]),
                _mark(t["verdict"], t["verdict"] == "PASS"),
            ]
        rows.append(row)
    notes = []
    if any(r.kind == "int8" for r in reports):
        notes.append("int8 MACs and params are counted as the float layers they replace")
    return fitted_table(title, cols, rows, width, notes)


def fitted_table(
    title: str, cols: list, rows: list[list[str]], width: int | None = None, notes=()
) -> Table:
    """A table that never cuts a number: when the columns do not fit `width` (the terminal's),
    the least needed go (named in a note: --json has them all) and names wrap."""
    from rich.text import Text

    width = width or console.width
    shown = list(range(len(cols)))

    def cell_len(text: str) -> int:
        return max((len(line) for line in Text.from_markup(text).plain.splitlines()), default=0)

    widths = [max([len(name)] + [cell_len(r[i]) for r in rows]) for i, (name, _) in enumerate(cols)]
    widths[0] = min(widths[0], 24)  # the name column wraps rather than push others out

    def need(idx: list[int]) -> int:
        return sum(widths[i] for i in idx) + 3 * len(idx) + 1

    dropped = []
    while need(shown) > width and len(shown) > 2:
        worst = min(shown[1:], key=lambda i: cols[i][1])
        shown.remove(worst)
        dropped.append(cols[worst][0])
    table = Table(title=title)
    for n, i in enumerate(shown):
        name = cols[i][0]
        if n == 0:
            table.add_column(name, overflow="fold", min_width=min(12, len(name) + 8), max_width=24)
        else:
            table.add_column(name, justify="left" if n < 3 and i < 3 else "right", no_wrap=True)
    for r in rows:
        table.add_row(*(r[i] for i in shown))
    if dropped:
        notes = [*notes, f"left out at this width: {', '.join(dropped)} (wider terminal or --json)"]
    if notes:
        table.caption = escape("; ".join(notes))
    return table


def _mark(text: str, ok: bool) -> str:
    return f"[green]{text}[/]" if ok else f"[red]{text}[/]"


def compression_table(rep) -> Table:
    """Before/after of quantize/fp16, with what explains any change in the metric."""
    table = Table(title=escape(f"{rep.label}: {rep.source} → {rep.output}"))
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row(
        "bytes",
        _fmt_int(rep.size_before),
        _fmt_int(rep.size_after) + f"  ({rep.size_before / rep.size_after:.2f}x smaller)",
    )
    table.add_row("MACs 2s", "", _fmt_int(rep.macs_2s) + "  (unchanged: same arithmetic count)")
    if rep.au_fa_fr_before is None:
        table.caption = escape(rep.note or "")
        return table
    table.add_row(
        escape(f"val au_fa_fr ({rep.data})"),
        f"{rep.au_fa_fr_before:.3e}",
        _mark(f"{rep.au_fa_fr_after:.3e}", not rep.degraded),
    )
    table.add_row(
        "distinct P(keyword) values", _fmt_int(rep.distinct_before), _fmt_int(rep.distinct_after)
    )
    table.add_row("max |Δ logit|", "", f"{rep.max_abs_dlogit:.2e}")
    table.add_row("max |Δ P(keyword)|", "", f"{rep.max_abs_dprob:.2e}")
    return table


def runs_table(runs: list, title: str, width: int | None = None) -> Table:
    cols = [("run", 9), ("kind", 8), ("loss", 7), ("T", 3), ("α", 2), ("aug", 1),
            ("params", 5), ("bytes", 4), ("MACs 2s", 4), ("val au_fa_fr", 9), ("mem ×", 6),
            ("MACs ×", 6), ("au_fa_fr ×", 6)]  # fmt: skip

    def opt(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = [
        [
            escape(r.name),
            r.kind,
            escape(r.loss),
            opt(r.temperature, "g"),
            opt(r.alpha, "g"),
            "-" if r.augment is None else ("yes" if r.augment else "no"),
            _fmt_int(r.params),
            _fmt_int(r.bytes),
            _fmt_int(r.macs_2s),
            opt(r.au_fa_fr, ".3e"),
            opt(r.memory_ratio, ".2f"),
            opt(r.macs_ratio, ".2f"),
            opt(r.au_fa_fr_ratio, ".2f"),
        ]
        for r in runs
    ]
    return fitted_table(title, cols, rows, width)


def sweep_plan_table(sweep) -> Table:
    """`kws sweep`: each run, what it learns from, its compress steps, what will happen to it
    and the entry of the file it comes from."""
    title = f"{escape(str(sweep.file))}: {len(sweep.runs)} runs → {escape(str(sweep.out))}"
    table = Table(title=title)
    for col in ("run", "stage", "from", "compress", "state", "entry"):
        table.add_column(col, overflow="fold")
    for r in sweep.runs:
        source = r.teacher or (r.cfg.distill.teacher if r.cfg.distill else "-")
        state = r.status
        if r.status == "finished" and r.stale_steps():
            state += ", to compress"
        compress = ", ".join(r.compress) or "-"
        table.add_row(escape(r.name), r.stage, escape(source), compress, state, escape(r.label))
    return table


def detect_header(settings: dict, out: Console = console) -> None:
    """Which model, threshold and state mode `kws detect` runs with, said once before the files."""
    out.print(
        f"model {settings['model']} ({settings['kind']}, {settings['keyword']!r}); threshold "
        f"{settings['threshold']:.4g} ({settings['threshold_from']}); state {settings['state']}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def detections_table(result, settings: dict) -> None:
    """One file's detections: when the keyword was said and how sure the model was."""
    head = f"[bold]{escape(result.path)}[/]  {result.duration:.1f} s"
    if result.notes:
        head += "  (" + escape("; ".join(result.notes)) + ")"
    console.print(head, highlight=False)
    if not result.detections:
        console.print(
            f"  no {settings['keyword']!r} above threshold {settings['threshold']:.4g}",
            markup=False,
        )
        return
    table = Table(box=None, padding=(0, 2))
    for col in ("#", "time", "start", "end", "peak P"):
        table.add_column(col, justify="right")
    for i, d in enumerate(result.detections, 1):
        table.add_row(str(i), _clock(d.time), _clock(d.start), _clock(d.end), f"{d.peak:.3f}")
    console.print(table)


def error(message: str) -> None:
    """A failure as the user sees it: one red line (and any detail lines under it) on stderr."""
    lines = message.splitlines() or [message]
    err_console.print(f"[bold red]error:[/] {escape(lines[0])}", highlight=False, soft_wrap=True)
    for line in lines[1:]:
        err_console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def detect_output(run, json_out: bool) -> bool:
    """What `kws detect` prints for a run: JSON, or the header and each file's table (a file that
    could not be read: its error line). True when a file failed (exit 1)."""
    if json_out:
        print_json([r.to_dict(run.settings) for r in run.results])
    else:
        detect_header(run.settings)
        for r in run.results:
            if r.error:
                error(r.error)
            else:
                detections_table(r, run.settings)
    return any(r.error for r in run.results)


def listen_header(settings: dict, source: str, duration: float | None, out: Console) -> None:
    """`kws listen`: the model, threshold and state mode, then what is listened to, how long."""
    detect_header(settings, out)
    until = f" for {duration:g} s" if duration else ""
    out.print(
        f"listening to {source}{until}; Ctrl-C stops", markup=False, highlight=False, soft_wrap=True
    )


def heard(number: int, detection, keyword: str, json_lines: bool) -> None:
    """One detection of `kws listen`, printed the moment it is final: a line of the table, or a
    JSON line."""
    if json_lines:
        print(json.dumps({"keyword": keyword, **detection.to_dict()}), flush=True)
        return
    console.print(
        f"{number:>3}  {_clock(detection.time):>9}  P({keyword}) {detection.peak:.3f}",
        markup=False,
        highlight=False,
    )


def listen_summary(result, keyword: str, out: Console) -> None:
    """`kws listen`'s last line: how many detections in how many seconds, and how it stopped."""
    n = len(result.detections)
    how = "stopped (Ctrl-C)" if result.interrupted else "done"
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    out.print(
        f"{how}: {n} detection{'s' * (n != 1)} of {keyword!r} in {result.seconds:.1f} s"
        f" listened{notes}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def devices_table(devices: list) -> Table:
    """`kws listen --list-devices`: what `--device` can name."""
    table = Table(title="input devices (* the default)", box=None, padding=(0, 2))
    table.add_column("")
    for col in ("--device", "name", "host API", "channels", "rate Hz"):
        table.add_column(col, justify="left" if col in ("name", "host API") else "right")
    for d in devices:
        cells = (str(d.index), d.name, d.host_api, str(d.channels), str(d.sample_rate))
        table.add_row("*" if d.default else "", *map(escape, cells))
    return table


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


def calibration_table(c) -> Table:
    table = Table(title=escape(f"calibration of {c.model} → {c.output}"), show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row(
        "negatives read",
        f"{c.hours:.3f} h in {c.files} files"
        + (f" ({len(c.skipped)} unreadable, skipped)" if c.skipped else ""),
    )
    table.add_row("target", f"≤ {c.target_fa_per_hour:g} false alarms / hour")
    for s in c.states.values():
        mode = f" ({s['state']} state)"
        table.add_row("threshold" + mode, f"{s['threshold']:.6g}")
        table.add_row(
            "measured" + mode, f"{s['false_alarms']} false alarms = {s['fa_per_hour']:.3g} / hour"
        )
        frr = "n/a (no validation data)"
        if s["frr"] is not None:
            frr = f"{s['frr']:.3f} of {s['positives']} clips"
        table.add_row("false rejects, val keyword clips" + mode, frr)
        if s["real_frr"] is not None:
            table.add_row(
                "false rejects, real keyword clips" + mode,
                f"{s['real_frr']:.3f} of {s['real_positives']} clips",
            )
        if s["real_fpr"] is not None:
            table.add_row(
                "false positives, real other clips" + mode,
                f"{s['real_fpr']:.3f} of {s['real_negatives']} clips",
            )
    return table


def print_json(data: Any) -> None:
    """Machine output goes to stdout untouched by rich (no wrapping, no colour), as strict JSON:
    a number that is not finite (latency not measured, an unlimited budget) is null."""
    print(json.dumps(_finite(data), indent=2, allow_nan=False))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data
