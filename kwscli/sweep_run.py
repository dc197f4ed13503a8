"""Running a sweep (kwscli/sweep.py reads and validates it): every run not done yet, trained or
resumed and compressed with the functions `kws teacher`, `kws distill`, `kws fp16` and `kws
quantize` call; a teacher before its students; `workers` runs at once in spawned processes with
cores ÷ workers threads each; then the students scored against their teachers for the plots.
Nothing here prints: progress goes to `say`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwscli.errors import ConfigError, Interrupted, KwsError
from kwscli.sweep import COMPRESSIONS, Sweep, SweepRun


@dataclass
class SweepResult:
    trained: list[str] = field(default_factory=list)  # trained, resumed or compressed now
    skipped: list[str] = field(default_factory=list)  # finished before
    failed: dict[str, str] = field(default_factory=dict)  # name → why
    blocked: dict[str, str] = field(default_factory=dict)  # name → the failed run it needs


@dataclass
class Comparison:
    """Students (and their compressed files) scored against their teacher: what the plots show."""

    baseline: Any  # evaluate.ModelReport
    reports: list
    targets: Any
    plot: Path
    tradeoff: Path


# ---------------------------------------------------------------- running


def run_sweep(
    sweep: Sweep,
    workers: int = 1,
    say: Callable[[str], None] = print,
    callbacks: Callable | None = None,
) -> SweepResult:
    """Train and compress every run not done yet, a teacher before its students, `workers` at
    once. A run that fails is reported and the others go on (not its students); Ctrl-C stops
    all, keeping every saved epoch. `callbacks(inner, run_dir)` may wrap the engine callbacks of
    each run (the CLI draws the curves). Progress lines go to `say`."""
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be ≥ 1")
    result = SweepResult()
    todo = []
    for run in sweep.runs:
        if run.status == "finished" and not run.stale_steps():
            say(f"{run.name}: finished already, skipped")
            result.skipped.append(run.name)
        else:
            todo.append(run)
    threads = max(1, _cores() // workers)
    try:
        if workers == 1 or len(todo) <= 1:
            _in_process(todo, threads, say, callbacks, result)
        else:
            _in_workers(todo, workers, threads, say, callbacks, result)
    except (Interrupted, KeyboardInterrupt):
        raise Interrupted(
            f"sweep interrupted: the epochs saved are kept; `{sweep.command}` goes on where it "
            "stopped (finished runs are skipped, an interrupted one resumes)"
        ) from None
    return result


def _in_process(todo, threads, say, callbacks, result: SweepResult) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for run in todo:
            if _blocked(run, result, say):
                continue
            _settle(run, lambda run=run: _execute(run, say, callbacks), result, say)
    finally:
        torch.set_num_threads(before)


def _settle(run, outcome: Callable[[], object], result: SweepResult, say) -> None:
    """Wait for a run (`outcome`: the run itself, or its worker's result) and record how it
    ended: trained, or failed (its students then wait); Ctrl-C stops the sweep."""
    try:
        outcome()
    except Interrupted:
        raise
    except KwsError as exc:
        _failed(run, exc, result, say)
    else:
        result.trained.append(run.name)


def _in_workers(todo, workers, threads, say, callbacks, result: SweepResult) -> None:
    """Runs in spawned processes (each imports torch afresh, with its share of the cores)."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    lines, stop = ctx.Queue(), ctx.Event()

    def drain() -> None:
        while True:
            try:
                say(lines.get_nowait())
            except queues.Empty:
                return

    pending, running = list(todo), {}
    pool = ProcessPoolExecutor(workers, ctx, _init_worker, (lines, stop, threads))
    try:
        while pending or running:
            for run in list(pending):
                if len(running) >= workers:
                    break
                if _blocked(run, result, say):
                    pending.remove(run)
                elif run.teacher is None or run.teacher in result.trained + result.skipped:
                    pending.remove(run)
                    running[pool.submit(_execute, run, None, callbacks)] = run
            if not running:
                break
            done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for future in done:
                _settle(running.pop(future), future.result, result, say)
    except BaseException:
        stop.set()  # workers still preparing data stop at their first step
        for future in running:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        drain()
        raise
    pool.shutdown(wait=True)
    drain()


_WORKER: dict[str, Any] = {}


def _init_worker(lines, stop, threads: int) -> None:
    import signal

    import torch

    # Ctrl-C reaches every process of the terminal: the engine takes it during training (its
    # epochs saved); outside training the parent stops the worker through `stop`
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _WORKER.update(say=lines.put, stop=stop)


def _blocked(run: SweepRun, result: SweepResult, say) -> bool:
    why = run.teacher if run.teacher in result.failed or run.teacher in result.blocked else None
    if why is not None:
        result.blocked[run.name] = why
        say(f"{run.name}: not run: its teacher {why} did not finish")
    return why is not None


def _failed(run: SweepRun, exc: KwsError, result: SweepResult, say) -> None:
    result.failed[run.name] = str(exc).splitlines()[0]
    say(f"{run.name}: failed: {result.failed[run.name]}")


def _execute(run: SweepRun, say, callbacks) -> None:
    """Train (or resume) one run as `kws teacher`/`kws distill` do, then compress it as
    `kws fp16`/`kws quantize` do."""
    from kwscli.compress import compress_checkpoint
    from kwscli.train import train_run

    say = say or _WORKER["say"]
    if run.status != "finished":
        what = "resuming" if run.status == "resume" else "training"
        say(f"{run.name}: {what} ({run.label})")
        progress = _Progress(run.name, say, _WORKER.get("stop"))
        cb = callbacks(progress, run.folder) if callbacks else progress
        trained = train_run(run.cfg, resume=run.status == "resume", callbacks=cb)
        skipped = trained.extras.get("skipped") or []
        if skipped:
            say(f"{run.name}: skipped {len(skipped)} unreadable files, e.g. {skipped[0]}")
        say(
            f"{run.name}: best epoch {trained.best_epoch}: val au_fa_fr "
            f"{trained.best_au_fa_fr:.3e} → {trained.checkpoint}"
        )
    for step in run.stale_steps():
        kind, conv = COMPRESSIONS[step]
        out = run.model(step)
        rep = compress_checkpoint(run.model(), kind, out, force=out.exists(), conv=conv)
        line = f"{run.name}: {step} → {out}"
        if rep.au_fa_fr_after is not None:
            line += f" (val au_fa_fr {rep.au_fa_fr_before:.3e} → {rep.au_fa_fr_after:.3e})"
        say(line + (f", more than {rep.tolerance:.0%} worse" if rep.degraded else ""))


class _Progress:
    """Engine callbacks as one line per epoch; stops the run when the sweep is stopped."""

    def __init__(self, name: str, say, stop=None) -> None:
        self.name, self.say, self.stop = name, say, stop

    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.epochs = epochs
        if start_epoch > 1:
            self.say(f"{self.name}: epochs 1-{start_epoch - 1} were saved; on from {start_epoch}")

    def on_step(self, epoch: int, step: int, loss: float) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt  # the engine saves what it has, as for Ctrl-C

    def on_epoch_end(self, r) -> None:
        best = ", best" if r.best else ""
        self.say(
            f"{self.name}: epoch {r.epoch}/{self.epochs}  val au_fa_fr {r.val_au_fa_fr:.3e}"
            f"{best}  {r.seconds:.1f}s"
        )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- the comparison at the end


def compare(sweep: Sweep) -> list[Comparison]:
    """Each teacher's students and their compressed files, scored on the students' validation
    split against that teacher (as `kws evaluate --baseline`): what the sweep's plots show."""
    from kwscli.evaluate import Targets, check_targets, evaluate_checkpoint

    out = []
    for (teacher, data), (plot, tradeoff) in sweep.plots.items():
        students = [r for r in sweep.runs if r.cfg.distill and r.cfg.distill.teacher == teacher]
        files = [
            f
            for r in students
            if r.cfg.data.path == data
            for f in (r.model(), *(r.model(s) for s in r.compress))
            if f.is_file()
        ]
        if not files or not Path(teacher).is_file():
            continue
        baseline, targets = evaluate_checkpoint(teacher, data, latency=False), Targets()
        reports = [evaluate_checkpoint(f, data, latency=False) for f in files]
        for r in reports:
            r.targets = check_targets(r, baseline, targets)
        out.append(Comparison(baseline, reports, targets, plot, tradeoff))
    return out
