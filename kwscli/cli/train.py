"""Training commands: `kws teacher`, `kws distill` (a flag per setting, from kwscli/options.py),
`kws runs` (every run and compressed model in one table), `kws sweep` (many runs from one file)
and `kws demo` (the whole journey)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kwscli.cli.app import (
    ConfigFile,
    JsonOut,
    app,
    warn,
)
from kwscli.errors import KwsError
from kwscli.options import SettingsCommand, with_settings

# the run controls of `kws teacher`/`kws distill`; every setting is a flag from kwscli/options.py
PrintConfig = Annotated[
    bool,
    typer.Option(
        "--print-config", metavar="", help="Print the resolved settings as YAML and exit."
    ),
]
Resume = Annotated[bool, typer.Option("--resume", metavar="", help="Continue an interrupted run.")]
ForceRun = Annotated[
    bool,
    typer.Option(
        "--force", metavar="", help="Replace an existing run (its files go once training starts)."
    ),
]


def _student_shown() -> dict[str, str]:
    """`kws distill --help` shows a student's defaults: the SPEC's final student shape and its
    schedule, and the teacher's features and dataset."""
    from kwscli.config import STUDENT_DEFAULTS, FeatureConfig

    shown = {"name": "from the settings, e.g. student-kl-T4"}
    shown |= {f"features.{k}": "the teacher's" for k in FeatureConfig.model_fields}
    teachers = ("path", "keyword", "split", "split_seed", "val_fraction")
    shown |= {f"data.{k}": "the teacher's" for k in teachers}
    for section, values in STUDENT_DEFAULTS.items():
        for k, v in values.items():
            shown[f"{section}.{k}"] = " ".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}"
    return shown


# ---------------------------------------------------------------- commands


def _training_command(student: bool, doc: str):
    """`kws teacher` and `kws distill`: a flag per setting (kwscli/options.py) and the run
    controls; they differ only in how the settings resolve (a student's start from its teacher)."""

    def command(
        overrides: dict,
        config: ConfigFile = None,
        print_config: PrintConfig = False,
        resume: Resume = False,
        force: ForceRun = False,
    ) -> None:
        if student:
            from kwscli.student import student_config

            cfg, warnings = student_config(config, overrides)
            for w in warnings:
                warn(w)
        else:
            from kwscli.config import RunConfig, build_config

            cfg = build_config(RunConfig, config, overrides)
        if print_config:
            _print_config(cfg)
            return
        _train(cfg, resume, force)

    command.__doc__ = doc
    return with_settings(student, _student_shown() if student else None)(command)


app.command("teacher", cls=SettingsCommand)(
    _training_command(
        False, "Train the teacher CRNN (defaults: the course baseline) into runs/NAME/."
    )
)
app.command("distill", cls=SettingsCommand)(
    _training_command(
        True, "Distil a teacher into a small student (default: the SPEC's final student shape)."
    )
)


def _train(cfg, resume: bool, force: bool) -> None:
    from kwscli.distributed import is_main
    from kwscli.plots import PlottingCallbacks
    from kwscli.report import TrainingProgress, console
    from kwscli.train import train_run

    if not is_main():  # under torchrun rank 0 shows the progress and the result
        train_run(cfg, resume, force)
        return
    run_dir = Path(cfg.runs_dir) / cfg.name
    with TrainingProgress() as shown:
        result = train_run(cfg, resume, force, PlottingCallbacks(shown, run_dir), shown.cache)
    skipped = result.extras.get("skipped") or []
    if skipped:
        warn(f"skipped {len(skipped)} unreadable files, e.g. {skipped[0]}")
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    chosen = "" if best.select_au_fa_fr is None else f" (chosen on {cfg.data.select_on})"
    console.print(
        f"best epoch {result.best_epoch}{chosen}: val au_fa_fr {result.best_au_fa_fr:.3e} → "
        f"{result.checkpoint}",
        markup=False,
    )


@app.command()
def runs(
    runs_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("runs"),
    sort: Annotated[
        str, typer.Option(help="name, kind, au_fa_fr, params, bytes, macs_2s or created.")
    ] = "created",
    json_out: JsonOut = False,
) -> None:
    """List every run: kind, loss, size, MACs, val au_fa_fr and ratios to its teacher."""
    from kwscli.report import console, err_console, print_json, runs_table
    from kwscli.runs import list_runs

    found, problems = list_runs(runs_dir, sort)
    for p in problems:
        err_console.print(f"[yellow]skipped:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if json_out:
        print_json([r.to_dict() for r in found])
    elif not found:
        console.print(f"no kws runs under {runs_dir}", markup=False, highlight=False)
    else:
        console.print(
            runs_table(
                found,
                f"runs in {escape(str(runs_dir))} (mem ×, MACs ×: teacher ÷ model; "
                "au_fa_fr ×: model ÷ teacher)",
            )
        )


@app.command()
def sweep(
    file: Annotated[
        Path,
        typer.Argument(
            help="A sweep (YAML): base:, runs: with the keys of --config files (README, 'Sweeps')."
        ),
    ],
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where the run folders go.")] = Path(
        "runs"
    ),
    workers: Annotated[
        int,
        typer.Option(
            min=1, metavar="N", help="Runs trained at once, in processes of cores ÷ N threads."
        ),
    ] = 1,
    check: Annotated[
        bool, typer.Option("--check", metavar="", help="Validate and list the runs; run nothing.")
    ] = False,
) -> None:
    """Train, distil and compress every run of a sweep file, skipping finished runs and resuming
    an interrupted one; then the runs table and the trade-off plots."""
    from kwscli.files import check_plot
    from kwscli.plots import PlottingCallbacks, plot_fa_fr, plot_tradeoff
    from kwscli.report import console, info, sweep_plan_table
    from kwscli.sweep import load_sweep
    from kwscli.sweep_run import compare, run_sweep

    plan = load_sweep(file, out)
    for run in plan.runs:
        for w in run.warnings:
            warn(f"{run.name}: {w}")
    console.print(sweep_plan_table(plan))
    if check:
        return
    for paths in plan.plots.values():  # before the work, not after it
        for path in paths:
            check_plot(path, flag="plot")
    result = run_sweep(plan, workers, say=info, callbacks=PlottingCallbacks)
    for c in compare(plan):
        plot_fa_fr([c.baseline, *c.reports], c.plot)
        plot_tradeoff(c.reports, c.baseline, c.targets, c.tradeoff)
        info(f"plots → {c.plot}, {c.tradeoff}")
    if out.is_dir():  # not when the only runs failed before saving anything
        runs(out, sort="name", json_out=False)
    if result.failed:
        failed = "; ".join(f"{name}: {why}" for name, why in result.failed.items())
        waiting = f", {len(result.blocked)} waiting on them" if result.blocked else ""
        raise KwsError(
            f"{len(result.failed)} of {len(plan.runs)} runs failed ({failed}){waiting}; fix and "
            f"run `{plan.command}` again: finished runs are skipped"
        )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where everything goes.")] = Path(
        "kws-demo"
    ),
    fast: Annotated[
        bool, typer.Option("--fast", metavar="", help="A reduced size (what the tests run).")
    ] = False,
) -> None:
    """The whole journey on built-in synthetic data: synthesize, teacher, distil, int8 and fp16, \
evaluate against the teacher, detect — a few minutes on a laptop CPU."""
    import time

    from kwscli.demo import run_demo
    from kwscli.plots import plot_tradeoff
    from kwscli.report import console, evaluation_table, info

    t0 = time.perf_counter()
    result = run_demo(out, fast, say=info)
    console.print(evaluation_table(result.reports, result.baseline))
    plot = plot_tradeoff(result.reports, result.baseline, result.targets, out / "tradeoff.png")
    said = ", ".join(f"{t:.1f} s" for t in result.keyword_times)
    found = ", ".join(f"{d.time:.1f} s (P {d.peak:.3f})" for d in result.detections) or "none"
    console.print(
        f"threshold {result.calibration.threshold:.4g} (1 false alarm/h on the keyword-free "
        f"audio; {result.calibration.hours * 60:.0f} min of it can show no finer)\n"
        f"keyword said at {said}; the calibrated fp16 student found it at {found}\n"
        f"done in {time.perf_counter() - t0:.0f} s. Files:\n"
        + "".join(f"  {k:8s} {v}\n" for k, v in result.files.items())
        + f"  plot     {plot}\n  audio    {result.recording}\n"
        f"Next: kws detect {result.recording} --model {result.files['detector']}  ·  "
        f"kws runs {out / 'runs'}  ·  kws distill --help",
        markup=False,
        highlight=False,
    )


def _print_config(cfg) -> None:
    import yaml

    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
