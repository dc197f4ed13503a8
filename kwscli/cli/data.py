"""Dataset commands: `kws data synth` (speak one) and `kws data download` (Speech Commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kwscli.cli.app import (
    data_app,
    warn,
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
        warn(w)
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
