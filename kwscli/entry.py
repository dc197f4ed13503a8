"""The `kws` command's entry point. `kws detect` on an exported model (or on the bundled one where
torch is not installed) goes straight to the torch-free runtime: the full command line (Typer,
pydantic, every command's settings) would take it from 0.25 s and 72 MB to 0.55 s and 90 MB on
the example recording, which is what a Raspberry Pi or a container feels. Everything else, and
any `kws detect` with a flag this path does not take (--help, --plot, -q, --example...), goes to
kwscli/cli/ as given.

The flags taken here are `kws detect`'s own (tests/test_entry.py holds them to those of
kwscli/cli/detect.py), and the output is the same function's (report.detect_output), so the two
paths print the same thing.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `kws detect`'s options this path takes, and how each value is read; a value that does not read
# (--threshold abc, --state diagonal) is left to the full command line and its usage error
VALUES = {
    "--model": Path,
    "--threshold": float,
    "--state": lambda s: {"window": "window", "carry": "carry"}[s.lower()],
    "--threads": int,
}
SWITCHES = {"--json": "json_out"}


def main() -> None:
    try:
        request = runtime_request(sys.argv[1:])
        if request is None:
            from kwscli.cli import main as full_cli

            full_cli()
        else:
            sys.exit(detect(**request))
    except KeyboardInterrupt:  # Ctrl-C while Python was still importing (torch takes 2 s)
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


def runtime_request(argv: list[str]) -> dict | None:
    """The arguments of `detect` when `argv` is a `kws detect` the runtime runs as it stands;
    None for anything else."""
    if not argv or argv[0] != "detect":
        return None
    from kwscli.runtime import is_runtime_model, torch_installed

    files, values, switches = [], {}, {}
    tokens = iter(argv[1:])
    for token in tokens:
        if token in SWITCHES:
            switches[SWITCHES[token]] = True
        elif token in VALUES:
            value = next(tokens, None)
            if value is None or not value.isascii():  # int("٣") reads; Typer's does not
                return None
            try:
                values[token[2:]] = VALUES[token](value)
            except (ValueError, KeyError):
                return None
        elif token == "-" or not token.startswith("-"):
            files.append(Path(token))
        else:
            return None
    model = values.get("model")
    if not files or not (is_runtime_model(model) if model else not torch_installed()):
        return None
    return {"files": files, **values, **switches}


def detect(
    files: list[Path],
    model: Path | None = None,
    threshold: float | None = None,
    state: str | None = None,
    threads: int = 1,
    json_out: bool = False,
) -> int:
    """`kws detect` on the runtime; the exit code (1: a file failed; a KwsError's own code)."""
    from kwscli.errors import KwsError
    from kwscli.report import detect_output, drop_stdout, error, internal_error
    from kwscli.runtime import detect_inputs

    try:
        run = detect_inputs(files, model, threshold, state, threads=threads)
        return 1 if detect_output(run, json_out) else 0
    except KwsError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:  # `kws detect ... | head`: the reader has what it wanted
        drop_stdout()
        return 0
    except Exception as exc:  # a bug in kws: --debug (the full command line) shows where
        error(internal_error(exc))
        return 1
