"""`kws` command line: options → validated config → one core call → render.

No tensor code here, and no torch import at module level, so `kws --help` stays fast.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperGroup

from kwscli.config import ConvPrecision, ExportFormat, StateMode
from kwscli.errors import ConfigError, KwsError
from kwscli.options import SettingsCommand, with_settings

_state = {"debug": False}


class _Group(TyperGroup):
    """Turns the core's KwsError and a usage error (an unknown choice, a missing argument) into
    one red line and its exit code (a traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KwsError as exc:
            if _state["debug"]:
                raise
            from kwscli.distributed import RankError

            _fail(str(exc), exc.exit_code, every_rank=isinstance(exc, RankError))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # `kws ... | head`: the reader has what it wanted
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            if _is_usage_error(exc):
                command = " ".join(["kws", *exc.ctx.command_path.split()[1:]]) if exc.ctx else ""
                where = f" (see {command} --help)" if command else ""
                _fail(exc.format_message().replace("Value error, ", "") + where, 2)
            # exits and help belong to click/typer; anything else is a bug in kws
            if type(exc).__module__.split(".")[0] in ("click", "typer"):
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)",
                every_rank=True,
            )

    def format_help(self, ctx, formatter):
        _readable_metavars(self, ctx)
        return super().format_help(ctx, formatter)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            _readable_metavars(command, ctx)
        return command


# what --help shows for a value whose command declares no metavar (Typer's default is the Python
# type: <list[Path]>, <str>, <bool>)
_METAVARS = {"Path": "PATH", "str": "TEXT", "float": "X", "int": "N", "bool": ""}


def _readable_metavars(command, ctx) -> None:
    import typing

    for param in [*getattr(command, "params", []), command.get_help_option(ctx)]:
        if param is None or param.metavar is not None:
            continue
        if param.param_type_name == "argument":  # its name says it; the help says the rest
            param.display_type_rich = lambda ctx: None
            continue
        kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
        name = getattr(typing.get_origin(kinds[0]) or kinds[0], "__name__", "")
        if name in _METAVARS:
            param.metavar = _METAVARS[name]


def _is_usage_error(exc: Exception) -> bool:
    """click's UsageError and its kinds (typer vendors click, so matched by name), but not
    NoArgsIsHelpError, which is the help text of a command run with no arguments."""
    names = {c.__name__ for c in type(exc).__mro__}
    return "UsageError" in names and "NoArgsIsHelpError" not in names


def _warn(message: str) -> None:
    """A warning: one unwrapped line on stderr, the work goes on."""
    from kwscli.distributed import is_main
    from kwscli.report import err_console

    if not is_main():
        return  # under torchrun rank 0 warns for all
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1, every_rank: bool = False):
    from kwscli.distributed import world
    from kwscli.report import error

    rank = world().rank
    if rank:  # under torchrun rank 0 reports what every rank meets; others only their own
        if not every_rank:
            raise typer.Exit(code)
        message = f"rank {rank}: {message}"
    error(message)
    raise typer.Exit(code)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="Train, compress, evaluate and run small keyword spotters.",
)
data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Get or make datasets.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from kwscli.version import __version__

        typer.echo(f"kws {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Results, warnings and errors only: no progress or notes."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    if quiet:
        from kwscli.report import set_quiet

        set_quiet(True)


# ---------------------------------------------------------------- shared options

ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML/JSON settings (flags win over it).")
]
DataDir = Annotated[
    str | None, typer.Option("--data", metavar="DIR", help="Dataset root (<word>/*.wav).")
]
Force = Annotated[bool, typer.Option("--force", metavar="", help="Replace an existing output.")]
JsonOut = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a table.")]

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
                _warn(w)
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
    from kwscli.report import PlottingCallbacks, TrainingProgress, console
    from kwscli.train import train_run

    if not is_main():  # under torchrun rank 0 shows the progress and the result
        train_run(cfg, resume, force)
        return
    run_dir = Path(cfg.runs_dir) / cfg.name
    with TrainingProgress() as shown:
        result = train_run(cfg, resume, force, PlottingCallbacks(shown, run_dir), shown.cache)
    skipped = result.extras.get("skipped") or []
    if skipped:
        _warn(f"skipped {len(skipped)} unreadable files, e.g. {skipped[0]}")
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    chosen = "" if best.select_au_fa_fr is None else f" (chosen on {cfg.data.select_on})"
    console.print(
        f"best epoch {result.best_epoch}{chosen}: val au_fa_fr {result.best_au_fa_fr:.3e} → "
        f"{result.checkpoint}",
        markup=False,
    )


@app.command()
def evaluate(
    models: Annotated[list[Path], typer.Argument(help="kws checkpoints (.pt).")],
    data: DataDir = None,
    split: Annotated[str, typer.Option(help="val, test, train or all.")] = "val",
    baseline: Annotated[
        Path | None, typer.Option(help="Teacher to compare against: ratios and PASS/FAIL.")
    ] = None,
    target_memory: Annotated[float, typer.Option(help="Memory ratio to reach.")] = 10.0,
    target_macs: Annotated[float, typer.Option(help="MACs ratio to reach.")] = 10.0,
    target_au_fa_fr: Annotated[float, typer.Option(help="au_fa_fr ratio not to exceed.")] = 1.1,
    json_out: JsonOut = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="FA/FR curve PNG; with --baseline also NAME.tradeoff.png."),
    ] = None,
    latency: Annotated[
        bool, typer.Option("--latency/--no-latency", help="Measure CPU latency per 1 s clip.")
    ] = True,
    far: Annotated[
        list[float] | None,
        typer.Option(
            metavar="RATE",
            help="A false-alarm rate to report the FRR at; repeat for several (--far 0.01 --far "
            "0.05). Default: 0.001, 0.01 and 0.05.",
        ),
    ] = None,
) -> None:
    """Score models on a dataset split: au_fa_fr, FRR at FA rates, size, MACs, latency."""
    from kwscli.evaluate import Targets, check_fars, check_targets, evaluate_checkpoint
    from kwscli.files import check_plot
    from kwscli.report import console, evaluation_table, info, plot_fa_fr, plot_tradeoff, print_json

    tradeoff = plot.with_suffix(".tradeoff.png") if plot and baseline else None
    for path in (plot, tradeoff):  # before the work, not after it
        if path is not None:
            check_plot(path, inputs=[*models, baseline, data])

    fars = check_fars(far)  # before any model is scored
    for m in models:  # `--far 0.01 0.05` reads 0.05 as a model: say so, not "not found"
        if not m.exists() and _is_number(str(m)):
            raise ConfigError(
                f"{m}: no such model, and it looks like a false-alarm rate: give each rate its "
                f"own flag (--far {far[-1] if far else 0.01:g} --far {m})"
            )
    reports = [evaluate_checkpoint(m, data, split, fars, latency=latency) for m in models]
    base = None
    if baseline is not None:
        base = evaluate_checkpoint(baseline, data, split, latency=False)
        targets = Targets(target_memory, target_macs, target_au_fa_fr)
        for r in reports:
            r.targets = check_targets(r, base, targets)
    if reports[0].skipped_dirs:
        dirs = ", ".join(reports[0].skipped_dirs)
        _warn(f"not read as clips: folders {dirs} of {reports[0].data}")
    if reports[0].skipped_files:
        _warn(f"{reports[0].skipped_files} unreadable files skipped in {reports[0].data}")
    written = []
    if plot:
        plot_fa_fr(reports, plot)
        written.append(plot)
        if base is not None:
            written.append(plot_tradeoff(reports, base, targets, tradeoff))
    if json_out:
        print_json([r.to_dict() for r in reports])
        return
    console.print(evaluation_table(reports, base))
    for w in written:
        info(f"plot → {w}")


FloatModel = Annotated[Path, typer.Argument(help="Float kws checkpoint.")]
CompressedOut = Annotated[
    Path | None, typer.Option(help="(default: MODEL.int8.pt / MODEL.fp16.pt beside it)")
]
Tolerance = Annotated[
    float, typer.Option(help="Warn when au_fa_fr grows by more than this fraction.")
]


ConvOption = Annotated[
    ConvPrecision,
    typer.Option(case_sensitive=False, help="The conv layer: float (kept float32), int8 or fp16."),
]


def _compress_command(kind: str, doc: str, conv_option: bool):
    """`kws quantize` (kind int8, with --conv) and `kws fp16`: one signature, one body."""

    def command(
        model: FloatModel,
        out: CompressedOut = None,
        data: DataDir = None,
        tolerance: Tolerance = 0.1,
        force: Force = False,
        json_out: JsonOut = False,
        conv: ConvOption = ConvPrecision.float,
    ) -> None:
        _compress(kind, model, out, data, tolerance, force, json_out, conv)

    command.__doc__ = doc
    if not conv_option:
        sig = inspect.signature(command, eval_str=True)
        command.__signature__ = sig.replace(
            parameters=[p for p in sig.parameters.values() if p.name != "conv"]
        )
    return command


app.command("quantize")(
    _compress_command(
        "int8", "int8 GRU and Linear weights (dynamic quantization); reports what changed.", True
    )
)
app.command("fp16")(
    _compress_command(
        "fp16",
        "Half-precision weights (runs in fp16 on CPU and CUDA); reports what changed.",
        False,
    )
)


def _compress(kind, model, out, data, tolerance, force, json_out, conv="float") -> None:
    from kwscli.compress import compress_checkpoint
    from kwscli.report import compression_table, console, print_json

    result = compress_checkpoint(model, kind, out, data, tolerance, force, conv)
    if result is None:
        console.print(f"{model} is already {kind}: nothing to do", markup=False, highlight=False)
        return
    if json_out:
        print_json(result.to_dict())
    else:
        console.print(compression_table(result))
    if result.degraded:
        _warn(
            f"au_fa_fr went from {result.au_fa_fr_before:.3e} to {result.au_fa_fr_after:.3e} "
            f"(more than {result.tolerance:.0%} worse); see the logit and probability changes"
        )


StateOption = Annotated[
    StateMode | None,
    typer.Option(
        case_sensitive=False,
        show_default=False,
        help="window (GRU from zero per window; the default) or carry (GRU state kept); an "
        "exported .onnx model runs the mode it was exported for.",
    ),
]
Threads = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="CPU threads for the model (1 is fastest for models this small, and does not "
        "thrash on a busy machine).",
    ),
]

DetectorModel = Annotated[
    Path | None,
    typer.Option(
        help="A kws checkpoint, a bundled model's name (student, teacher), or an exported "
        ".onnx model (runs without torch). Default: the bundled student."
    ),
]
Threshold = Annotated[
    float | None, typer.Option(help="P(keyword) to fire at (default: the model's own).")
]


@app.command()
def detect(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Audio files (wav, flac, ogg...), folders of them, or - for a wav on stdin.",
            show_default=False,
        ),
    ] = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            metavar="",
            help="Also spot in the example recording that ships with kws (45 s, 'sheila' at "
            "5.0, 16.5, 27.0 and 38.5 s).",
        ),
    ] = False,
    model: DetectorModel = None,
    threshold: Threshold = None,
    state: StateOption = None,
    json_out: JsonOut = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of P(keyword) over time.")] = None,
    save_triggers: Annotated[
        Path | None, typer.Option(help="Write each detection's audio into this folder.")
    ] = None,
    threads: Threads = 1,
) -> None:
    """Spot the keyword in recordings of any length: when it was said, and how sure."""
    from kwscli.files import check_plot, ensure_folder, trace_plot_paths
    from kwscli.report import detect_output, info, plot_trace
    from kwscli.runtime import detect_inputs

    files = _audio_inputs(files, example)
    # before the work, not after it
    for path in trace_plot_paths(plot, files) if plot else []:
        check_plot(path, inputs=[*files, model])
    if save_triggers is not None:
        ensure_folder(save_triggers)

    run = detect_inputs(
        files,
        model,
        threshold,
        state,
        keep_trace=plot is not None,
        save_triggers_to=save_triggers,
        threads=threads,
    )
    failed = detect_output(run, json_out)
    if plot:
        for path in plot_trace(run.results, run.settings, plot):
            info(f"plot → {path}")
    if failed:
        raise typer.Exit(1)


def _audio_inputs(files: list[Path] | None, example: bool) -> list[Path]:
    from kwscli.bundled import bundled_example

    files = [*(files or []), *([bundled_example()] if example else [])]
    if not files:
        raise typer.BadParameter(
            "give audio files, folders of them, or - for stdin (or --example for the recording "
            "that ships with kws)",
            param_hint="FILES",
        )
    return files


@app.command()
def listen(
    model: DetectorModel = None,
    threshold: Threshold = None,
    state: StateOption = None,
    threads: Threads = 1,
    device: Annotated[
        str | None,
        typer.Option(
            metavar="INDEX|NAME",
            help="Input device: its index or a part of its name (default: the system's).",
        ),
    ] = None,
    list_devices: Annotated[
        bool, typer.Option("--list-devices", metavar="", help="List the input devices and exit.")
    ] = False,
    duration: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Stop after this much audio (default: at Ctrl-C)."),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", metavar="", help="One JSON line per detection, as it happens."),
    ] = False,
    simulate: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.wav", help="Play a wav as if it were the microphone (tests, demos)."
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            metavar="X",
            help="With --simulate: play X times faster than real time (0: no waiting). Default 1.",
        ),
    ] = None,
) -> None:
    """Spot the keyword live from the microphone, printing each detection as it happens \
(needs pip install "kws\\[listen]")."""
    from kwscli.listen import check_duration, input_devices, listen, open_source
    from kwscli.report import (
        console,
        devices_table,
        err_console,
        heard,
        listen_header,
        listen_summary,
    )
    from kwscli.runtime import load_spotter
    from kwscli.shapes import SAMPLE_RATE

    if list_devices:
        console.print(devices_table(input_devices()))
        return
    check_duration(duration)
    source = open_source(simulate, device, speed, SAMPLE_RATE)  # no sounddevice: fail first
    spotter = load_spotter(model, threshold, state, threads)
    keyword, out = spotter.keyword, err_console if json_out else console
    listen_header(spotter.settings(), source.description, duration, out)
    count = iter(range(1, sys.maxsize))
    result = listen(spotter, source, duration, lambda d: heard(next(count), d, keyword, json_out))
    listen_summary(result, keyword, out)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="kws checkpoint.")],
    negatives: Annotated[Path, typer.Option(help="Keyword-free audio: a file or a folder.")],
    fa_per_hour: Annotated[float, typer.Option(help="False alarms per hour to allow.")] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="(default: MODEL.calibrated.pt beside it)")
    ] = None,
    data: DataDir = None,
    state: Annotated[
        str, typer.Option(help="both (a threshold for each), window or carry, as in detect.")
    ] = "both",
    positives: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Real keyword clips (a Speech Commands layout folder, or a folder of clips): "
            "the false rejects on real voices are measured and stored with the threshold.",
        ),
    ] = None,
    max_real_frr: Annotated[
        float | None,
        typer.Option(
            metavar="SHARE",
            help="With --positives: lower the threshold where it would miss more than this share "
            "of the real keyword clips (the false alarms per hour it costs are measured).",
        ),
    ] = None,
    force: Force = False,
    json_out: JsonOut = False,
) -> None:
    """Choose the threshold that meets a false-alarms-per-hour target; store it in the model."""
    from kwscli.calibrate import calibrate as run_calibration
    from kwscli.report import calibration_table, console, print_json

    result = run_calibration(
        model, negatives, fa_per_hour, out, data, state, force, positives, max_real_frr
    )
    for s in result.states.values():
        if s["limited_by"] == "max_real_frr":
            _warn(
                f"{s['state']} state: {fa_per_hour:g} FA/h would miss more than "
                f"{max_real_frr:g} of the real keyword clips; threshold lowered to "
                f"{s['threshold']:.4g}, at {s['fa_per_hour']:.3g} FA/h on the negatives"
            )
    if result.too_short:
        _warn(result.too_short)
    if json_out:
        print_json(result.to_dict())
    else:
        console.print(calibration_table(result))


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="kws checkpoint (float, fp16; int8: onnx).")],
    format: Annotated[
        ExportFormat,
        typer.Option(
            case_sensitive=False, help="torchscript (stateful streaming) or onnx (window scorer)."
        ),
    ] = ExportFormat.torchscript,
    state: Annotated[
        StateMode,
        typer.Option(
            case_sensitive=False,
            help="onnx: the mode the file runs in, window (GRU from zero per window) or carry "
            "(GRU state kept; float and fp16 models), with that mode's calibrated threshold.",
        ),
    ] = StateMode.window,
    out: Annotated[
        Path | None,
        typer.Option(help="(default: MODEL.streaming.ts / MODEL.onnx beside it)"),
    ] = None,
    force: Force = False,
) -> None:
    """Streaming TorchScript (16 kHz chunks in, P(keyword) out, needs only torch), or ONNX with \
keyword, threshold and front end inside (kws detect runs it without torch)."""
    from kwscli.export import export_model
    from kwscli.report import console

    path = export_model(model, format, out, force, state.value)
    if format == ExportFormat.onnx:
        console.print(
            f"ONNX model → {path}\n  kws detect FILE --model {path}  (onnxruntime runs it; "
            "torch is not needed: README, 'Without torch')",
            markup=False,
        )
    else:
        console.print(
            f"streaming TorchScript → {path}\n  m = torch.jit.load({str(path)!r}); "
            "probs = m(chunk_16k_float32); m.reset()",
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
    from kwscli.report import (
        PlottingCallbacks,
        console,
        info,
        plot_fa_fr,
        plot_tradeoff,
        sweep_plan_table,
    )
    from kwscli.sweep import load_sweep
    from kwscli.sweep_run import compare, run_sweep

    plan = load_sweep(file, out)
    for run in plan.runs:
        for w in run.warnings:
            _warn(f"{run.name}: {w}")
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
    from kwscli.report import console, evaluation_table, info, plot_tradeoff

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


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/synth"),
    clips: Annotated[int, typer.Option(min=10, help="Number of 1 s clips.")] = 4000,
    keyword: Annotated[str, typer.Option(help="Keyword to synthesize.")] = "sheila",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing synth dataset.")
    ] = False,
    engines: Annotated[
        str,
        typer.Option(
            help="Speech engines, comma-separated: espeak (built in), hibari and piper "
            '(pip install "kws\\[voices]"), flite (a system program: apt-get install flite). '
            "More engines transfer better to real voices."
        ),
    ] = "espeak",
    piper_voice: Annotated[
        list[Path] | None,
        typer.Option(
            "--piper-voice",
            metavar="FILE.onnx",
            help="A Piper voice file (its .onnx.json beside it); repeat for more voices.",
        ),
    ] = None,
    keyword_phonemes: Annotated[
        str | None,
        typer.Option(
            metavar="IPA",
            help="How the keyword should sound, in IPA (built in for sheila: ʃˈiːlə). Engines "
            "that say it otherwise are warned about and, where they can, spoken from these.",
        ),
    ] = None,
    neural_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of clips per engine other than espeak.")
    ] = 0.25,
    keyword_fraction: Annotated[
        float, typer.Option(min=0, max=1, help="Share of clips that are the keyword.")
    ] = 0.04,
) -> None:
    """Generate a Speech-Commands-layout dataset with TTS engines (no network)."""
    from kwscli.data.engines import parse_engines
    from kwscli.data.synthetic import synthesize_dataset
    from kwscli.report import CountProgress, console

    names = parse_engines(engines)
    with CountProgress("synthesizing") as progress:
        rep = synthesize_dataset(
            out,
            num_clips=clips,
            keyword=keyword,
            seed=seed,
            workers=workers,
            progress=progress,
            force=force,
            engines=names,
            piper_voices=piper_voice or (),
            keyword_phonemes=keyword_phonemes,
            neural_share=neural_share,
            keyword_fraction=keyword_fraction,
        )
    for w in rep.warnings:
        _warn(w)
    what = f"{rep.clips:,} clips ({rep.keyword_clips:,} {keyword!r})"
    if rep.already_present:
        console.print(
            f"{what} already at {rep.root} with these settings (--force to remake)",
            markup=False,
            highlight=False,
        )
    else:
        engines_used = ", ".join(f"{n} {c:,}" for n, c in rep.per_engine.items())
        console.print(
            f"{what} from {rep.speakers:,} speakers, {rep.voices} voices ({engines_used}), in "
            f"{rep.seconds:.1f}s → {rep.root}",
            markup=False,
        )


@data_app.command("download")
def data_download(
    version: Annotated[str, typer.Option(help="v0.01 or v0.02.")] = "v0.01",
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="Mirror URL of the tarball.")] = None,
    expected_size: Annotated[
        int | None, typer.Option(help="Tarball bytes to check (default: the official size).")
    ] = None,
    from_archive: Annotated[
        Path | None, typer.Option(help="Extract a tarball you already downloaded instead.")
    ] = None,
) -> None:
    """Download and extract Google Speech Commands (resumable, size-checked, idempotent)."""
    from kwscli.data import download as dl
    from kwscli.report import CountProgress, console

    if from_archive is not None:
        root = dl.install_archive(from_archive, dest, version)
        console.print(f"extracted → {root}", markup=False, highlight=False)
        return
    with CountProgress(f"speech commands {version}", unit_bytes=True) as progress:
        res = dl.download_dataset(
            version, dest, url=url, expected_size=expected_size, progress=progress
        )
    what = (
        "already present"
        if res.already_present
        else (f"downloaded {res.bytes_downloaded:,} bytes" + (" (resumed)" if res.resumed else ""))
    )
    console.print(f"{what} → {res.root}", markup=False, highlight=False)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _print_config(cfg) -> None:
    import yaml

    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())


def main() -> None:
    app(prog_name="kws")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
