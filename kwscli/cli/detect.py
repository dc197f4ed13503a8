"""Spotting commands: `kws detect` (recordings) and `kws listen` (the microphone). `kws detect`
on an exported model usually never gets here: kwscli/entry.py runs it on the runtime directly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kwscli.cli.app import (
    JsonOut,
    app,
)
from kwscli.config import StateMode

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
    from kwscli.plots import plot_trace
    from kwscli.report import detect_output, info
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
