"""The README's examples run: every `kws ...` line of a fenced block runs here at a reduced size
(or is marked `# long`, or `# microphone` where it needs a sound card), in order, in a fresh folder;
a `$ kws ...` transcript runs as written and prints the lines shown under it; the Python example
runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
KWS = str(Path(sys.executable).parent / "kws")
MARKERS = ("# long", "# microphone")

# the same command at the size of a test: (pattern, replacement) on the command line
REDUCTIONS = [
    (r"--clips \d+", "--clips 400"),
    (r"--epochs \d+", "--epochs 1"),
    (r"^kws (teacher|distill)\b(?!.*--epoch-size)", r"kws \1 --epoch-size 128"),
    (r"^kws demo$", "kws demo --fast"),
]


def fenced_blocks() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    return [(m[1], m[2].splitlines()) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def command_blocks() -> list[list[str]]:
    """The `kws` lines of each shell block (a `cmd && kws ...` line gives its kws part)."""
    blocks = []
    for lang, lines in fenced_blocks():
        if lang not in ("bash", "sh"):
            continue
        commands = [re.sub(r"^.*&& (?=kws )", "", line).strip() for line in lines]
        commands = [c for c in commands if c.startswith("kws ")]
        if commands:
            blocks.append(commands)
    return blocks


def transcripts() -> list[tuple[str, list[str]]]:
    """`$ kws ...` and the lines shown under it, up to the next `$` or the end of the block."""
    found = []
    for _lang, lines in fenced_blocks():
        for i, line in enumerate(lines):
            if line.startswith("$ kws "):
                shown = []
                for after in lines[i + 1 :]:
                    if after.startswith("$ "):
                        break
                    shown.append(after)
                found.append((line[2:], shown))
    return found


def reduced(command: str) -> str:
    command = command.split("  #")[0].strip()
    for pattern, replacement in REDUCTIONS:
        command = re.sub(pattern, replacement, command)
    return command


def run(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == "kws"
    env = {**os.environ, "COLUMNS": "200", "KWS_CACHE_DIR": str(cwd / ".cache")}
    return subprocess.run(
        [KWS, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_readme_has_what_this_file_runs():
    """The parser finds the README's examples (a test that found nothing would pass)."""
    assert len(command_blocks()) >= 2
    assert sum(len(b) for b in command_blocks()) >= 10
    assert len(transcripts()) >= 3
    assert "kws demo" in command_blocks()[0]


@pytest.mark.slow
@pytest.mark.parametrize("block", command_blocks(), ids=lambda b: b[0].split("#")[0][:40])
def test_each_command_block_runs_at_a_reduced_size(block, tmp_path):
    if any("../shared" in c for c in block) and not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").symlink_to(SHARED)
    ran = 0
    for command in block:
        if any(command.endswith(m) or f"{m} " in command for m in MARKERS):
            continue
        out = run(reduced(command), work)
        assert out.returncode == 0, f"{reduced(command)}\n{out.stdout}\n{out.stderr}"
        ran += 1
    assert ran or all(any(m in c for m in MARKERS) for c in block)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "shown"), transcripts(), ids=lambda t: str(t)[:40])
def test_each_transcript_prints_what_the_readme_shows(command, shown):
    out = run(command, ROOT)
    printed = _words(out.stdout + out.stderr).replace(
        f"{ROOT}/", ""
    )  # the README's paths: the clone's
    for line in shown:
        if line.strip():
            assert _words(line) in printed, f"{command}: {line!r} not in\n{out.stdout}{out.stderr}"


@pytest.mark.slow
def test_the_python_example_runs_as_written(tmp_path):
    (code,) = [
        m[1] for m in re.finditer(r"```python\n(import kwscli.*?)```", README.read_text(), re.S)
    ]
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "Detection(" in out.stdout and "sheila!" in out.stdout
