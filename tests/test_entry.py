"""The `kws` entry point: `kws detect` on an exported model runs the runtime without the full
command line, prints what the full command line prints, and takes only `kws detect`'s own flags."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kwscli.bundled import BUNDLED, bundled_example
from kwscli.cli import app
from kwscli.entry import SWITCHES, VALUES, runtime_request

pytest.importorskip("onnxruntime")

runner = CliRunner()
ONNX = str(BUNDLED / "student.onnx")
EXAMPLE = str(bundled_example())


@pytest.mark.parametrize(
    "argv, taken",
    [
        (["detect", "a.wav", "--model", "m.onnx"], True),
        (["detect", "a.wav", "b.flac", "-", "--model", "M.ONNX", "--json", "--threads", "2"], True),
        (["detect", "--state", "CARRY", "--threshold", "0.7", "a.wav", "--model", "m.onnx"], True),
        (["detect", "a.wav", "--model", "m.pt"], False),  # a checkpoint: torch
        (["detect", "a.wav", "--model", "m.onnx", "--plot", "p.png"], False),  # not taken here
        (["detect", "a.wav", "--model", "m.onnx", "--threshold", "abc"], False),  # usage error
        (["detect", "a.wav", "--model", "m.onnx", "--state", "diagonal"], False),
        (["detect", "a.wav", "--model"], False),  # a flag without its value
        (["detect", "a.wav", "--model", "m.onnx", "--state"], False),
        (["detect", "a.wav", "--model", "m.onnx", "--threads", "٣"], False),  # int() reads it
        (["detect", "a.wav", "--model", "m.onnx", "--threshold", "0.５"], False),
        (["detect", "--model", "m.onnx"], False),  # no files: the full CLI says what to give
        (["detect", "a.wav", "--model=m.onnx"], False),
        (["-q", "detect", "a.wav", "--model", "m.onnx"], False),
        (["evaluate", "m.onnx"], False),
        ([], False),
    ],
)
def test_only_a_runtime_detect_as_it_stands_skips_the_full_command_line(argv, taken):
    request = runtime_request(argv)
    assert (request is not None) == taken
    if taken and "--state" in argv:
        assert request["state"] == "carry" and request["threshold"] == 0.7


def test_the_flags_it_takes_are_kws_detects_own():
    """Each flag read here is an option of `kws detect` (kwscli/cli/detect.py) of the same kind,
    so renaming one there cannot leave this path reading a flag that no longer exists."""
    import typer.main

    detect = typer.main.get_command(app).commands["detect"]
    params = {opt: p for p in detect.params for opt in p.opts}
    for flag in [*VALUES, *SWITCHES]:
        assert flag in params, f"{flag} is not an option of kws detect"

    def kind(flag):
        return typing.get_args(params[flag].type_descriptor.annotation) or (
            params[flag].type_descriptor.annotation,
        )

    assert params["--json"].is_flag
    assert float in kind("--threshold") and int in kind("--threads") and Path in kind("--model")
    assert {s.value for s in kind("--state")[0]} == {"window", "carry"}


def _kws(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kwscli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("out", [["--json"], []])
def test_it_prints_what_the_full_command_line_prints(out):
    args = ["detect", EXAMPLE, "--model", ONNX, *out]
    fast, full = _kws(*args), runner.invoke(app, args)
    assert fast.returncode == full.exit_code == 0, fast.stderr + full.output
    assert fast.stdout == full.stdout
    if out:
        assert len(json.loads(fast.stdout)[0]["detections"]) >= 3


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--threshold", "1.5"], 2, "threshold"),
        (["--threads", "0"], 2, "--threads 0"),
        (["--threads", "99999999999"], 2, "must be between 1 and 256"),
        (["--state", "carry"], 2, "exported for --state window"),
    ],
)
def test_its_errors_are_the_full_command_lines(args, code, needle, tmp_path):
    argv = ["detect", EXAMPLE, "--model", ONNX, *args]
    fast, full = _kws(*argv), runner.invoke(app, argv)
    assert fast.returncode == full.exit_code == code
    assert needle in fast.stderr and "Traceback" not in fast.stderr
    assert fast.stderr == full.stderr


def test_a_missing_file_is_reported_and_the_others_still_run(tmp_path):
    argv = ["detect", str(tmp_path / "nope.wav"), EXAMPLE, "--model", ONNX, "--json"]
    fast, full = _kws(*argv), runner.invoke(app, argv)
    assert fast.returncode == full.exit_code == 1
    assert fast.stdout == full.stdout and fast.stderr == full.stderr
    assert [len(r["detections"]) > 0 for r in json.loads(fast.stdout)] == [False, True]


def test_it_imports_neither_torch_nor_typer_nor_pydantic():
    code = (
        "import sys\n"
        f"sys.argv = ['kws', 'detect', {EXAMPLE!r}, '--model', {ONNX!r}, '--json']\n"
        "from kwscli.entry import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('torch', 'typer', 'click', 'pydantic', 'yaml') "
        "if m in sys.modules), file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path.cwd()
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "[]"


def test_ctrl_c_while_still_starting_is_the_one_line_too(monkeypatch, capsys):
    """Ctrl-C during the imports (torch's take 2 s), before any command's own handler is in
    place: the same line and exit code as later, no traceback."""
    from kwscli import entry

    def interrupted(_argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "runtime_request", interrupted)
    monkeypatch.setattr(sys, "argv", ["kws", "detect", "x.wav"])
    with pytest.raises(SystemExit) as exc:
        entry.main()
    assert exc.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"
