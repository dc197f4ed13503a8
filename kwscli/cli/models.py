"""Commands on trained models: `kws evaluate`, `kws quantize`, `kws fp16`, `kws calibrate`,
and `kws export`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from kwscli.cli.app import (
    DataDir,
    Force,
    JsonOut,
    app,
    warn,
)
from kwscli.config import ConvPrecision, ExportFormat, StateMode
from kwscli.errors import ConfigError


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
    from kwscli.plots import plot_fa_fr, plot_tradeoff
    from kwscli.report import console, evaluation_table, info, print_json

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
        warn(f"not read as clips: folders {dirs} of {reports[0].data}")
    if reports[0].skipped_files:
        warn(f"{reports[0].skipped_files} unreadable files skipped in {reports[0].data}")
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
        "Half-precision weights (half the bytes; evaluated in fp16); reports what changed.",
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
        warn(
            f"au_fa_fr went from {result.au_fa_fr_before:.3e} to {result.au_fa_fr_after:.3e} "
            f"(more than {result.tolerance:.0%} worse); see the logit and probability changes"
        )


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
            warn(
                f"{s['state']} state: {fa_per_hour:g} FA/h would miss more than "
                f"{max_real_frr:g} of the real keyword clips; threshold lowered to "
                f"{s['threshold']:.4g}, at {s['fa_per_hour']:.3g} FA/h on the negatives"
            )
    if result.too_short:
        warn(result.too_short)
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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
