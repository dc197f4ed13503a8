"""Every bad input each `kws` command was tried with: the exit code and the message it gets.

Each entry of ROWS is one test (`test_bad_input`) through the real CLI: the exit code, no
traceback, the message fragment, an `error:` line for errors, and nothing written (or changed)
where the command refused. `python tests/test_bad_inputs.py` reruns every row and rewrites
docs/bad-inputs.md from what the CLI actually printed; `test_doc_lists_every_row` keeps the two
in sync.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kwscli.cli import app

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"
SR = 16_000
runner = CliRunner()

# a quick training run: only rows that must train (or would, were validation missing) use it
QUICK = ["--epochs", "1", "--batch-size", "16", "--hidden-size", "8", "--no-augment"]


class Ctx:
    """One row's scratch folder (`tmp`) and the shared inputs: a trained tiny teacher and the
    tiny dataset it learned from. Builders write their bad inputs here and return paths."""

    def __init__(self, tmp: Path, teacher: Path, data: Path) -> None:
        self.tmp, self.data, self._teacher = tmp, data, teacher
        self.subs = {str(tmp): "<tmp>", str(data): "<data>", str(REPO): "<repo>"}
        self.marker = tmp / "PWNED"

    def p(self, rel: str) -> Path:
        return self.tmp / rel

    def write(self, rel: str, content: str | bytes = b"") -> Path:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def folder(self, rel: str) -> Path:
        self.p(rel).mkdir(parents=True, exist_ok=True)
        return self.p(rel)

    def wav(
        self,
        rel: str,
        seconds: float = 1.0,
        sr: int = SR,
        channels: int = 1,
        fill: float | None = None,
        subtype: str = "PCM_16",
    ) -> Path:
        """Noise (or a constant `fill`) of `seconds` at `sr` Hz."""
        n = int(round(sr * seconds))
        if fill is None:
            audio = 0.1 * np.random.default_rng(0).standard_normal((n, channels))
        else:
            audio = np.full((n, channels), fill)
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.astype(np.float32), sr, subtype=subtype)
        return path

    def teacher(self) -> Path:
        """A private copy of the trained teacher (commands may write beside it)."""
        path = self.p("teacher.pt")
        if not path.exists():
            shutil.copy(self._teacher, path)
        return path

    def raw_teacher(self) -> dict:
        import torch

        return torch.load(self._teacher, weights_only=True)

    def saved(self, rel: str, obj) -> Path:
        import torch

        torch.save(obj, self.p(rel))
        return self.p(rel)

    def state_dict(self, rel: str) -> Path:
        """A plain PyTorch state_dict, as another tool would save it."""
        import torch

        return self.saved(rel, {"w": torch.zeros(3)})

    def compressed(self, kind: str) -> Path:
        """teacher.int8.pt / teacher.fp16.pt, made with `kws quantize` / `kws fp16`."""
        out = self.p(f"teacher.{kind}.pt")
        cmd = "quantize" if kind == "int8" else "fp16"
        res = runner.invoke(app, [cmd, str(self.teacher()), "--out", str(out)])
        assert res.exit_code == 0, res.output
        return out

    def truncated(self) -> Path:
        data = self._teacher.read_bytes()
        return self.write("cut.pt", data[: len(data) // 2])

    def evil(self) -> Path:
        """A pickle that would create `self.marker` if anything unpickled it."""
        return self.saved("evil.pt", {"format": "kws-checkpoint", "x": _Plant(self.marker)})

    def dataset(self, rel: str, words: dict[str, int]) -> Path:
        from tests.conftest import make_dataset

        return make_dataset(self.p(rel), words)

    def run_copy(self) -> Path:
        """A finished run folder (runs/t) holding a copy of the trained teacher's run."""
        shutil.copytree(self._teacher.parent, self.p("runs/t"))
        return self.p("runs")

    def closed_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.subs[f":{port}/"] = ":<port>/"
        return port

    def tarball(self, rel: str, members: dict[str, bytes]) -> Path:
        path = self.p(rel)
        with tarfile.open(path, "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path


class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@dataclass(frozen=True)
class Row:
    """One bad input: `args(ctx)` builds it and returns the arguments after `command`."""

    command: str
    bad_input: str
    args: Callable[[Ctx], list]
    exit_code: int
    fragment: str  # must appear in the output (whitespace-normalised)
    nothing_under: tuple[str, ...] = ()  # paths (under tmp) that must hold no file afterwards
    unchanged: tuple[str, ...] = ()  # paths (under tmp) whose bytes must not change
    check: Callable[[Ctx, str], str | None] | None = None  # extra: a problem, or None
    skip: Callable[[], str | None] | None = None  # a reason to skip here, or None
    env: Callable[[Ctx], dict[str, str]] | None = None  # environment for the run

    @property
    def id(self) -> str:
        return f"{self.command}: {self.bad_input}"


def _no_marker(ctx: Ctx, output: str) -> str | None:
    return f"{ctx.marker} was created: the pickle ran" if ctx.marker.exists() else None


def _no_negative_times(ctx: Ctx, output: str) -> str | None:
    bad = re.findall(r"-\d+:\d\d(?::\d\d)?\.\d\d", output)
    return f"detection times before the file starts: {bad}" if bad else None


def _good_file_still_scored(ctx: Ctx, output: str) -> str | None:
    ok = f"{ctx.p('good.wav')}  1.2 s"
    return None if ok in output else "the readable file after the bad ones was not scored"


def _no_escape(ctx: Ctx, output: str) -> str | None:
    return "a member was written outside dest" if ctx.p("escaped.txt").exists() else None


def _cuda_present() -> str | None:
    import torch

    return "CUDA is available here" if torch.cuda.is_available() else None


def _stride_past_window(ctx: Ctx) -> Path:
    """A checkpoint whose conv time stride (200 frames) is longer than a 1 s window."""
    import torch

    from kwscli.checkpoint import Checkpoint, save_checkpoint
    from kwscli.config import FeatureConfig, ModelConfig
    from kwscli.models.crnn import CRNN

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, stride=(2, 200))
    ckpt = Checkpoint("teacher", cfg, FeatureConfig(), "sheila", CRNN(cfg, 40).state_dict())
    return save_checkpoint(ckpt, ctx.p("wide.pt"))


def _with(ctx: Ctx, rel: str, **changes) -> Path:
    """The teacher checkpoint dict with some entries replaced (or removed, with None)."""
    raw = ctx.raw_teacher()
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return ctx.saved(rel, raw)


def _unreadable_keyword(ctx: Ctx) -> Path:
    """A dataset whose keyword folder holds only files that are not audio."""
    root = ctx.dataset("no-kw", {"sheila": 4, "yes": 20})
    for f in (root / "sheila").iterdir():
        f.write_bytes(b"not audio")
    return root


def _teacher(ctx: Ctx, *extra) -> list:
    return ["--data", ctx.data, "--runs-dir", ctx.p("runs"), *extra]


def _config(ctx: Ctx, name: str, text: str) -> list:
    return _teacher(ctx, "--config", ctx.write(name, text))


def _distill(ctx: Ctx, *extra) -> list:
    return ["--teacher", ctx.teacher(), "--runs-dir", ctx.p("runs"), *extra]


def _unreadable_dataset(ctx: Ctx, words: dict[str, int]) -> Path:
    """A dataset of `words` clips plus one corrupt and one empty wav (only those, for {})."""
    root = ctx.dataset("ds", words) if words else ctx.folder("ds")
    ctx.write("ds/yes/corrupt_nohash_0.wav", b"RIFF\x00\x01garbage" * 10)
    ctx.write("ds/sheila/empty_nohash_0.wav")
    return root


def _no_split_lists(ctx: Ctx) -> Path:
    """A keyword and another word, with no validation_list.txt / testing_list.txt."""
    ctx.wav("ds/sheila/a_nohash_0.wav")
    return ctx.wav("ds/yes/b_nohash_0.wav").parent.parent


def _locked(ctx: Ctx, name: str) -> str:
    """runs/NAME/.lock naming this (live) process."""
    ctx.write(f"runs/{name}/.lock", str(os.getpid()))
    ctx.subs[f"pid {os.getpid()}"] = "pid <pid>"
    return name


def _foreign_runs(ctx: Ctx) -> Path:
    """A folder of run folders whose only .pt is another tool's state_dict."""
    ctx.folder("other/x")
    ctx.state_dict("other/x/model.pt")
    return ctx.p("other")


def _synth_made(ctx: Ctx) -> Path:
    """An earlier synthetic dataset (seed 0) as `kws data synth` leaves it."""
    ctx.write("synth/SYNTH.json", '{"generator": "kws-synth/1", "seed": 0, "complete": true}\n')
    ctx.wav("synth/sheila/0_nohash_0.wav")
    return ctx.p("synth")


R = Row
ROWS: list[Row] = [
    # ------------------------------------------------------------------ teacher
    R("teacher", "missing data folder",
      lambda c: ["--data", c.p("nope"), "--runs-dir", c.p("runs")], 1,
      "dataset folder not found", nothing_under=("runs",)),
    R("teacher", "--select-on a folder without the keyword",
      lambda c: ["--data", c.data, "--runs-dir", c.p("runs"), "--select-on",
                 c.wav("real/yes/a_nohash_0.wav").parents[1], *QUICK], 1,
      "keyword 'sheila' is not a folder", nothing_under=("runs/teacher/model.pt",)),
    R("teacher", "data path is a file",
      lambda c: ["--data", c.write("notes.txt", "hi"), "--runs-dir", c.p("runs")], 1,
      "not a folder", nothing_under=("runs",)),
    R("teacher", "folder with no wavs",
      lambda c: ["--data", c.folder("empty/yes").parent, "--runs-dir", c.p("runs")], 1,
      "no wav files", nothing_under=("runs",)),
    R("teacher", "every wav unreadable (one corrupt, one empty)",
      lambda c: ["--data", _unreadable_dataset(c, {}), "--split", "random", "--runs-dir",
                 c.p("runs")], 1, "could be read", nothing_under=("runs",)),
    R("teacher", "dataset without split lists (official split)",
      lambda c: ["--data", _no_split_lists(c), "--runs-dir", c.p("runs")], 1,
      "split list not found", nothing_under=("runs",)),
    R("teacher", "unknown keyword",
      lambda c: _teacher(c, "--keyword", "marvin"), 1, "'marvin' is not a folder",
      nothing_under=("runs",)),
    R("teacher", "only keyword clips (no other words)",
      lambda c: ["--data", c.dataset("ds", {"sheila": 12}), "--runs-dir", c.p("runs"), *QUICK],
      1, "needs both keyword and other clips", nothing_under=("runs",)),
    R("teacher", "unknown --split", lambda c: _teacher(c, "--split", "weird"), 2,
      "'weird' is not one of", nothing_under=("runs",)),
    R("teacher", "config file missing",
      lambda c: _teacher(c, "--config", c.p("nope.yaml")), 2, "config file not found",
      nothing_under=("runs",)),
    R("teacher", "config file that is not a mapping",
      lambda c: _config(c, "c.yaml", "- a\n- b\n"), 2, "expected a mapping",
      nothing_under=("runs",)),
    R("teacher", "invalid YAML", lambda c: _config(c, "c.yaml", "model: [1, 2\n"), 2,
      "not valid YAML/JSON", nothing_under=("runs",)),
    R("teacher", "invalid JSON", lambda c: _config(c, "c.json", '{"model": '), 2,
      "not valid YAML/JSON", nothing_under=("runs",)),
    R("teacher", "unknown key in config (model.hiden_size)",
      lambda c: _config(c, "c.yaml", "model:\n  hiden_size: 3\n"), 2,
      "model.hiden_size: unknown setting", nothing_under=("runs",)),
    R("teacher", "unknown top-level key in config (epochs)",
      lambda c: _config(c, "c.yaml", "epochs: 3\n"), 2, "epochs: unknown setting",
      nothing_under=("runs",)),
    R("teacher", "wrong type in config (batch_size: lots)",
      lambda c: _config(c, "c.yaml", "train:\n  batch_size: lots\n"), 2, "train.batch_size",
      nothing_under=("runs",)),
    R("teacher", "negative hidden size", lambda c: _teacher(c, "--hidden-size", "-3"), 2,
      "--hidden-size: ", nothing_under=("runs",)),
    R("teacher", "stride 0", lambda c: _teacher(c, "--stride", "0", "8"), 2, "--stride[0]: ",
      nothing_under=("runs",)),
    R("teacher", "kernel larger than n_mels", lambda c: _teacher(c, "--kernel-size", "41", "20"),
      2, "no output rows", nothing_under=("runs",)),
    R("teacher", "n_mels smaller than the kernel", lambda c: _teacher(c, "--n-mels", "4"), 2,
      "no output rows", nothing_under=("runs",)),
    R("teacher", "kernel longer than the clip (no time steps)",
      lambda c: _teacher(c, "--kernel-size", "5", "500"), 2, "no time steps",
      nothing_under=("runs",)),
    R("teacher", "time stride longer than the clip (no second time step, no stream)",
      lambda c: _teacher(c, "--stride", "2", "200", *QUICK), 2, "model.stride[1]",
      nothing_under=("runs",)),
    R("teacher", "0 epochs", lambda c: _teacher(c, "--epochs", "0"), 2, "--epochs: ",
      nothing_under=("runs",)),
    R("teacher", "learning rate 0", lambda c: _teacher(c, "--lr", "0"), 2, "--lr: ",
      nothing_under=("runs",)),
    R("teacher", "unknown --device tpu", lambda c: _teacher(c, "--device", "tpu"), 2,
      "--device: ", nothing_under=("runs",)),
    R("teacher", "name '..'", lambda c: _teacher(c, "--name", ".."), 2,
      "would leave the runs folder", nothing_under=("runs",)),
    R("teacher", "name with a slash", lambda c: _teacher(c, "--name", "a/b"), 2,
      "String should match pattern", nothing_under=("runs",)),
    R("teacher", "seed 2**64", lambda c: _teacher(c, "--seed", str(2**64)), 2, "--seed: ",
      nothing_under=("runs",)),
    R("teacher", "--resume with nothing to resume", lambda c: _teacher(c, "--resume"), 1,
      "nothing to resume", nothing_under=("runs",)),
    R("teacher", "existing run without --force",
      lambda c: ["--data", c.data, "--runs-dir", c.run_copy(), "--name", "t"], 1,
      "already holds a run", unchanged=("runs/t",)),
    R("teacher", "run folder locked by a live process",
      lambda c: _teacher(c, "--name", _locked(c, "busy"), *QUICK), 1,
      "in use by another kws run", unchanged=("runs/busy",)),
    R("teacher", "runs dir that is a file (unwritable)",
      lambda c: ["--data", c.data, "--runs-dir", c.write("runs", "not a folder"), *QUICK], 1,
      "cannot write there", unchanged=("runs",)),
    R("teacher", "--device cuda on a machine without CUDA",
      lambda c: _teacher(c, "--device", "cuda", *QUICK), 1, "CUDA is not available",
      nothing_under=("runs",), skip=_cuda_present),
    R("teacher", "corrupt + empty wav in the dataset",
      lambda c: ["--data", _unreadable_dataset(c, {"sheila": 20, "yes": 20}), "--runs-dir",
                 c.p("runs"), *QUICK], 0, "skipped 2 unreadable files"),
    # ------------------------------------------------------------------ distill
    R("distill", "no --teacher and no runs/teacher/model.pt", lambda c: ["--runs-dir", c.p("r")],
      1, "runs/teacher/model.pt: no teacher trained yet", nothing_under=("r",)),
    R("distill", "teacher path missing",
      lambda c: ["--teacher", c.p("nope.pt"), "--runs-dir", c.p("runs")], 1,
      "checkpoint not found", nothing_under=("runs",)),
    R("distill", "teacher is a folder",
      lambda c: ["--teacher", c.folder("t"), "--runs-dir", c.p("runs")], 1, "is a folder",
      nothing_under=("runs",)),
    R("distill", "teacher is an empty file",
      lambda c: ["--teacher", c.write("t.pt"), "--runs-dir", c.p("runs")], 1, "empty file",
      nothing_under=("runs",)),
    R("distill", "teacher is a text file",
      lambda c: ["--teacher", c.write("t.pt", "hello"), "--runs-dir", c.p("runs")], 1,
      "not a readable checkpoint", nothing_under=("runs",)),
    R("distill", "truncated teacher",
      lambda c: ["--teacher", c.truncated(), "--runs-dir", c.p("runs")], 1, "truncated",
      nothing_under=("runs",)),
    R("distill", "teacher is a plain state_dict",
      lambda c: ["--teacher", c.state_dict("sd.pt"), "--runs-dir", c.p("runs")],
      1, "not a kws checkpoint", nothing_under=("runs",)),
    R("distill", "crafted pickle as teacher",
      lambda c: ["--teacher", c.evil(), "--runs-dir", c.p("runs")], 1, "refused",
      nothing_under=("runs",), check=_no_marker),
    R("distill", "int8 checkpoint as teacher",
      lambda c: ["--teacher", c.compressed("int8"), "--runs-dir", c.p("runs")], 1,
      "cannot teach", nothing_under=("runs",)),
    R("distill", "fp16 checkpoint as teacher",
      lambda c: ["--teacher", c.compressed("fp16"), "--runs-dir", c.p("runs")], 1,
      "cannot teach", nothing_under=("runs",)),
    R("distill", "temperature 0", lambda c: _distill(c, "--temperature", "0"), 2,
      "--temperature: ", nothing_under=("runs",)),
    R("distill", "alpha 1.5", lambda c: _distill(c, "--alpha", "1.5"), 2, "--alpha: ",
      nothing_under=("runs",)),
    R("distill", "unknown loss l2", lambda c: _distill(c, "--loss", "l2"), 2,
      "'l2' is not one of", nothing_under=("runs",)),
    R("distill", "negative attention weight", lambda c: _distill(c, "--attention-weight", "-1"),
      2, "--attention-weight: ", nothing_under=("runs",)),
    R("distill", "mixup with hard labels (alpha < 1)",
      lambda c: _distill(c, "--mixup", "0.5", "--alpha", "0.5"), 2, "needs alpha=1",
      nothing_under=("runs",)),
    R("distill", "negative similarity weight",
      lambda c: _distill(c, "--similarity-weight", "-1"), 2, "--similarity-weight: ",
      nothing_under=("runs",)),
    R("distill", "hard-negative share above 1", lambda c: _distill(c, "--hard-negatives", "1.5"),
      2, "--hard-negatives: ", nothing_under=("runs",)),
    R("distill", "different n_mels than the teacher", lambda c: _distill(c, "--n-mels", "20"),
      2, "differs from the teacher's", nothing_under=("runs",)),
    R("distill", "different keyword than the teacher", lambda c: _distill(c, "--keyword", "yes"),
      2, "train a teacher for that keyword first", nothing_under=("runs",)),
    R("distill", "unknown key in config (distill.temp)",
      lambda c: _distill(c, "--config", c.write("c.yaml", "distill:\n  temp: 2\n")), 2,
      "distill.temp: unknown setting", nothing_under=("runs",)),
    R("distill", "student kernel longer than the clip (no time steps)",
      lambda c: _distill(c, "--kernel-size", "5", "500"), 2, "no time steps",
      nothing_under=("runs",)),
    # ------------------------------------------------------------------ evaluate
    R("evaluate", "--plot onto the model it scores",
      lambda c: [c.teacher(), "--data", c.data, "--no-latency", "--plot", c.teacher()], 1,
      "plots are PNG images", unchanged=("teacher.pt",)),
    R("evaluate", "--plot onto a text file named .png",
      lambda c: [c.teacher(), "--data", c.data, "--no-latency", "--plot",
                 c.write("n.png", "notes")], 1, "is not a PNG image", unchanged=("n.png",)),
    R("evaluate", "a dataset of keyword clips only",
      lambda c: [c.teacher(), "--data", c.dataset("kw", {"sheila": 20}), "--split", "all",
                 "--no-latency"], 1, "needs both keyword and other clips"),
    R("evaluate", "a dataset whose keyword clips are all unreadable",
      lambda c: [c.teacher(), "--data", _unreadable_keyword(c), "--split", "all",
                 "--no-latency"], 1, "0 of them 'sheila'"),
    R("evaluate", "missing checkpoint", lambda c: [c.p("nope.pt")], 1, "checkpoint not found"),
    R("evaluate", "directory as checkpoint", lambda c: [c.folder("d")], 1, "is a folder"),
    R("evaluate", "empty file", lambda c: [c.write("e.pt")], 1, "empty file"),
    R("evaluate", "text file", lambda c: [c.write("t.pt", "hello")], 1,
      "not a readable checkpoint"),
    R("evaluate", "truncated checkpoint", lambda c: [c.truncated()], 1, "truncated"),
    R("evaluate", "plain state_dict", lambda c: [c.state_dict("sd.pt")], 1,
      "not a kws checkpoint"),
    R("evaluate", "crafted pickle", lambda c: [c.evil()], 1, "refused", check=_no_marker),
    R("evaluate", "checkpoint from a newer kws (format_version 99)",
      lambda c: [_with(c, "new.pt", format_version=99)], 1, "upgrade kws"),
    R("evaluate", "kws checkpoint missing its keyword",
      lambda c: [_with(c, "nokw.pt", keyword=None)], 1, "keyword"),
    R("evaluate", "weights that do not match the stored config",
      lambda c: [_with(c, "mix.pt", model={**c.raw_teacher()["model"], "hidden_size": 9})], 1,
      "size mismatch"),
    R("evaluate", "no dataset recorded and no --data",
      lambda c: [_with(c, "nodata.pt", info={}), "--no-latency"], 1, "pass --data DIR"),
    R("evaluate", "bad --split", lambda c: [c.teacher(), "--split", "dev"], 2, "--split 'dev'"),
    R("evaluate", "--data pointing to a missing folder",
      lambda c: [c.teacher(), "--data", c.p("nope")], 1, "dataset folder not found"),
    R("evaluate", "--data without the keyword's folder",
      lambda c: [c.teacher(), "--data", c.dataset("ds", {"yes": 5, "no": 5})], 1,
      "'sheila' is not a folder"),
    R("evaluate", "--baseline missing",
      lambda c: [c.teacher(), "--baseline", c.p("nope.pt"), "--no-latency"], 1,
      "checkpoint not found"),
    R("evaluate", "--plot under a path that is a file",
      lambda c: [c.teacher(), "--no-latency", "--plot", c.write("f.txt", "x") / "p.png"], 1,
      "f.txt"),
    # ------------------------------------------------------------------ quantize / fp16
    R("quantize", "missing model", lambda c: [c.p("nope.pt")], 1, "checkpoint not found",
      nothing_under=("nope.int8.pt",)),
    R("quantize", "non-kws file (text)", lambda c: [c.write("notes.pt", "hello")], 1,
      "not a readable checkpoint", nothing_under=("notes.int8.pt",)),
    R("quantize", "plain state_dict", lambda c: [c.state_dict("sd.pt")], 1,
      "not a kws checkpoint", nothing_under=("sd.int8.pt",)),
    R("quantize", "crafted pickle", lambda c: [c.evil()], 1, "refused",
      nothing_under=("evil.int8.pt",), check=_no_marker),
    R("quantize", "already int8", lambda c: [c.compressed("int8")], 0, "already int8",
      nothing_under=("teacher.int8.int8.pt",)),
    R("quantize", "an fp16 model", lambda c: [c.compressed("fp16")], 1,
      "needs the float model", nothing_under=("teacher.fp16.int8.pt",)),
    R("quantize", "output exists without --force",
      lambda c: [c.teacher(), "--out", c.write("q.pt", "keep")], 1, "already exists",
      unchanged=("q.pt",)),
    R("quantize", "output folder missing", lambda c: [c.teacher(), "--out", c.p("no/q.pt")], 1,
      "no such folder for the output", nothing_under=("no",)),
    R("quantize", "--out is a folder", lambda c: [c.teacher(), "--out", c.folder("d")], 1,
      "is a folder", nothing_under=("d",)),
    R("quantize", "--data pointing to a missing folder",
      lambda c: [c.teacher(), "--data", c.p("nope")], 1, "dataset folder not found",
      nothing_under=("teacher.int8.pt",)),
    R("quantize", "negative --tolerance", lambda c: [c.teacher(), "--tolerance", "-1"], 2,
      "--tolerance", nothing_under=("teacher.int8.pt",)),
    R("quantize", "unknown --conv mode", lambda c: [c.teacher(), "--conv", "int4"], 2,
      "'int4' is not one of 'float', 'int8', 'fp16'", nothing_under=("teacher.int8.pt",)),
    R("fp16", "fp16 of an fp16", lambda c: [c.compressed("fp16")], 0, "already fp16",
      nothing_under=("teacher.fp16.fp16.pt",)),
    R("fp16", "fp16 of an int8", lambda c: [c.compressed("int8")], 1, "needs the float model",
      nothing_under=("teacher.int8.fp16.pt",)),
    R("fp16", "non-kws file (text)", lambda c: [c.write("notes.pt", "hello")], 1,
      "not a readable checkpoint", nothing_under=("notes.fp16.pt",)),
    R("fp16", "output exists without --force",
      lambda c: [c.teacher(), "--out", c.write("h.pt", "keep")], 1, "already exists",
      unchanged=("h.pt",)),
    R("fp16", "output folder missing", lambda c: [c.teacher(), "--out", c.p("no/h.pt")], 1,
      "no such folder for the output", nothing_under=("no",)),
    R("quantize", "--out the input model, with --force",
      lambda c: [c.teacher(), "--out", c.teacher(), "--force"], 1, "is an input of this command",
      unchanged=("teacher.pt",)),
    R("fp16", "--out the input model, with --force",
      lambda c: [c.teacher(), "--out", c.teacher(), "--force"], 1, "is an input of this command",
      unchanged=("teacher.pt",)),
    # ------------------------------------------------------------------ detect
    R("detect", "empty file", lambda c: [c.write("e.wav"), "--model", c.teacher()], 1,
      "not a readable audio file"),
    R("detect", "non-audio file named .wav",
      lambda c: [c.write("t.wav", "this is not audio at all" * 10), "--model", c.teacher()], 1,
      "not a readable audio file"),
    R("detect", "wav header with no samples",
      lambda c: [c.wav("none.wav", 0.0), "--model", c.teacher()], 1, "contains no audio samples"),
    R("detect", "a folder with no audio in it",
      lambda c: [c.folder("d"), "--model", c.teacher()], 1, "a folder with no audio files"),
    R("detect", "missing file among several (the others still run)",
      lambda c: [c.p("missing.wav"), c.wav("good.wav", 1.2), "--model", c.teacher()], 1,
      "no such file", check=_good_file_still_scored),
    R("detect", "NaN samples (float wav)",
      lambda c: [c.wav("nan.wav", 1.0, fill=np.nan, subtype="FLOAT"), "--model", c.teacher()],
      1, "NaN"),
    R("detect", "threshold 0", lambda c: [c.wav("a.wav"), "--model", c.teacher(),
                                          "--threshold", "0"], 2, "between 0 and 1"),
    R("detect", "threshold 1", lambda c: [c.wav("a.wav"), "--model", c.teacher(),
                                          "--threshold", "1"], 2, "between 0 and 1"),
    R("detect", "threshold 1.5", lambda c: [c.wav("a.wav"), "--model", c.teacher(),
                                            "--threshold", "1.5"], 2, "between 0 and 1"),
    R("detect", "bad --state", lambda c: [c.wav("a.wav"), "--model", c.teacher(),
                                          "--state", "x"], 2, "'x' is not one of"),
    R("detect", "model that is not a checkpoint (a wav)",
      lambda c: [c.wav("a.wav"), "--model", c.wav("m.wav")], 1, "not a readable checkpoint"),
    R("detect", "model missing", lambda c: [c.wav("a.wav"), "--model", c.p("nope.pt")], 1,
      "checkpoint not found"),
    R("detect", "crafted pickle as model", lambda c: [c.wav("a.wav"), "--model", c.evil()], 1,
      "refused", check=_no_marker),
    R("detect", "no --model and no bundled model", lambda c: [c.wav("a.wav")], 1,
      "pass --model", env=lambda c: {"KWS_MODELS_DIR": str(c.p("no-models"))}),
    R("detect", "model whose time stride is longer than its window",
      lambda c: [c.wav("a.wav"), "--model", _stride_past_window(c)], 1, "stride"),
    R("detect", "--save-triggers pointing at a file",
      lambda c: [c.wav("a.wav"), "--model", c.teacher(), "--threshold", "0.01",
                 "--save-triggers", c.write("f.txt", "x")], 1, "f.txt", unchanged=("f.txt",)),
    R("detect", "--plot under a path that is a file",
      lambda c: [c.wav("a.wav"), "--model", c.teacher(), "--plot", c.write("f.txt") / "p.png"],
      1, "f.txt"),
    R("detect", "a file of zeros",
      lambda c: [c.wav("zeros.wav", 2.0, fill=0.0), "--model", c.teacher()], 0,
      "zeros.wav 2.0 s", check=_no_negative_times),
    R("detect", "a 0.1 s file", lambda c: [c.wav("short.wav", 0.1), "--model", c.teacher()], 0,
      "only 0.10 s of audio", check=_no_negative_times),
    R("detect", "stereo 44.1 kHz file",
      lambda c: [c.wav("st.wav", 2.0, sr=44_100, channels=2), "--model", c.teacher()], 0,
      "mixed 2 channels to mono; resampled 44100 Hz → 16000 Hz", check=_no_negative_times),
    R("detect", "8 kHz file", lambda c: [c.wav("n.wav", 1.5, sr=8000), "--model", c.teacher()],
      0, "8000 Hz holds nothing above 4000 Hz", check=_no_negative_times),
    R("detect", "--plot onto a model (.pt)",
      lambda c: [c.wav("a.wav"), "--model", c.teacher(), "--plot", c.teacher()], 1,
      "plots are PNG images", unchanged=("teacher.pt",)),
    R("detect", "--plot onto a text file named .png",
      lambda c: [c.wav("a.wav"), "--model", c.teacher(), "--plot", c.write("n.png", "notes")], 1,
      "is not a PNG image", unchanged=("n.png",)),
    R("detect", "file name that reads as rich markup ([draft])",
      lambda c: [c.wav("x [draft].wav"), "--model", c.teacher()], 0, "x [draft].wav"),
    R("detect", "missing file named like markup ([/], [bold])",
      lambda c: [c.p("a[/]b.wav"), c.p("n[bold].wav"), "--model", c.teacher()], 1,
      "n[bold].wav: no such file"),
    # ------------------------------------------------------------------ listen
    R("listen", "--simulate a missing file", lambda c: ["--simulate", c.p("nope.wav")], 1,
      "no such file"),
    R("listen", "--simulate a file that is not audio",
      lambda c: ["--simulate", c.write("t.wav", "this is not audio at all" * 10)], 1,
      "not a readable audio file"),
    R("listen", "--duration 0", lambda c: ["--simulate", c.wav("a.wav"), "--duration", "0"], 2,
      "must be a number of seconds > 0"),
    R("listen", "--duration nan", lambda c: ["--simulate", c.wav("a.wav"), "--duration", "nan"],
      2, "must be a number of seconds > 0"),
    R("listen", "--speed -1", lambda c: ["--simulate", c.wav("a.wav"), "--speed", "-1"], 2,
      "must be ≥ 0"),
    R("listen", "threshold 1.5",
      lambda c: ["--simulate", c.wav("a.wav"), "--model", c.teacher(), "--threshold", "1.5"], 2,
      "between 0 and 1"),
    R("listen", "missing model",
      lambda c: ["--simulate", c.wav("a.wav"), "--model", c.p("nope.pt")], 1,
      "checkpoint not found"),
    # ------------------------------------------------------------------ calibrate
    R("calibrate", "negatives folder missing",
      lambda c: [c.teacher(), "--negatives", c.p("no"), "--out", c.p("c.pt")], 1,
      "no such file or folder of keyword-free audio", nothing_under=("c.pt",)),
    R("calibrate", "folder without audio",
      lambda c: [c.teacher(), "--negatives", c.write("neg/x.txt", "x").parent, "--out",
                 c.p("c.pt")], 1, "no audio files under", nothing_under=("c.pt",)),
    R("calibrate", "every negative unreadable",
      lambda c: [c.teacher(), "--negatives", c.write("neg/x.wav", "nope").parent, "--out",
                 c.p("c.pt")], 1, "could be read", nothing_under=("c.pt",)),
    R("calibrate", "--fa-per-hour -1",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--fa-per-hour", "-1", "--out",
                 c.p("c.pt")], 2, "must be ≥ 0", nothing_under=("c.pt",)),
    R("calibrate", "bad --state",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--state", "x", "--out",
                 c.p("c.pt")], 2, "expected window or carry", nothing_under=("c.pt",)),
    R("calibrate", "output exists without --force",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--out", c.write("c.pt", "keep")],
      1, "already exists", unchanged=("c.pt",)),
    R("calibrate", "model that is not a checkpoint",
      lambda c: [c.write("m.pt", "hello"), "--negatives", c.wav("n.wav")], 1,
      "not a readable checkpoint", nothing_under=("m.calibrated.pt",)),
    R("calibrate", "--positives folder missing",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--positives", c.p("no"), "--out",
                 c.p("c.pt")], 1, "no such folder of keyword clips", nothing_under=("c.pt",)),
    R("calibrate", "--fa-per-hour inf",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--fa-per-hour", "inf", "--out",
                 c.p("c.pt")], 2, "must be ≥ 0 and finite", nothing_under=("c.pt",)),
    R("calibrate", "--out the input model, with --force",
      lambda c: [c.teacher(), "--negatives", c.wav("n.wav"), "--out", c.teacher(), "--force"], 1,
      "is an input of this command", unchanged=("teacher.pt",)),
    # ------------------------------------------------------------------ export
    R("export", "--out the input model, with --force",
      lambda c: [c.teacher(), "--out", c.teacher(), "--force"], 1, "is an input of this command",
      unchanged=("teacher.pt",)),
    R("export", "int8 model", lambda c: [c.compressed("int8")], 1, "--format onnx",
      nothing_under=("teacher.int8.streaming.ts",)),
    R("export", "unknown --format (tflite)", lambda c: [c.teacher(), "--format", "tflite"], 2,
      "'tflite' is not one of", nothing_under=("teacher.streaming.ts",)),
    R("export", "missing model", lambda c: [c.p("nope.pt")], 1, "checkpoint not found"),
    R("export", "crafted pickle", lambda c: [c.evil()], 1, "refused",
      nothing_under=("evil.streaming.ts",), check=_no_marker),
    R("export", "output exists without --force",
      lambda c: [c.teacher(), "--out", c.write("m.ts", "keep")], 1, "already exists",
      unchanged=("m.ts",)),
    R("export", "output folder missing", lambda c: [c.teacher(), "--out", c.p("no/m.ts")], 1,
      "no such folder for the output", nothing_under=("no",)),
    # ------------------------------------------------------------------ runs
    R("runs", "missing folder", lambda c: [c.p("nope")], 1, "no such folder of runs"),
    R("runs", "a file instead of a folder", lambda c: [c.write("f.txt", "x")], 1,
      "no such folder of runs"),
    R("runs", "bad --sort", lambda c: [c.run_copy(), "--sort", "size"], 2, "--sort 'size'"),
    R("runs", "folder with no kws runs (foreign .pt only)",
      lambda c: [_foreign_runs(c)], 0, "no kws runs under"),
    # ------------------------------------------------------------------ data synth
    R("data synth", "output folder non-empty and not ours, with --force",
      lambda c: ["--out", c.write("mine/notes.txt", "keep").parent, "--clips", "10", "--force"],
      1, "not a synthetic dataset", unchanged=("mine",)),
    R("data synth", "output folder non-empty, without --force",
      lambda c: ["--out", c.write("mine/notes.txt", "keep").parent, "--clips", "10"], 1,
      "already exists and is not empty", unchanged=("mine",)),
    R("data synth", "--clips 5 (below the minimum of 10)",
      lambda c: ["--out", c.p("s"), "--clips", "5"], 2, "Invalid value for '--clips'",
      nothing_under=("s",)),
    R("data synth", "--engines with an unknown engine",
      lambda c: ["--out", c.p("s"), "--engines", "espeak,festival"], 2,
      "expected a comma-separated list of espeak, hibari, piper", nothing_under=("s",)),
    R("data synth", "--engines piper without a voice",
      lambda c: ["--out", c.p("s"), "--engines", "espeak,piper"], 2,
      "needs at least one voice: --piper-voice", nothing_under=("s",)),
    R("data synth", "--piper-voice that does not exist",
      lambda c: ["--out", c.p("s"), "--engines", "piper", "--piper-voice", c.p("v.onnx")], 1,
      "Piper voice file not found", nothing_under=("s",)),
    R("data synth", "--piper-voice without piper in --engines",
      lambda c: ["--out", c.p("s"), "--piper-voice", c.p("v.onnx")], 2,
      "piper is not in --engines", nothing_under=("s",)),
    R("data synth", "different settings into an existing synth folder, without --force",
      lambda c: ["--out", _synth_made(c), "--clips", "10", "--seed", "1"], 1,
      "holds a synthetic dataset made with other settings", unchanged=("synth",)),
    R("data synth", "output path is a file",
      lambda c: ["--out", c.write("s.txt", "keep"), "--clips", "10"], 1, "is a file",
      unchanged=("s.txt",)),
    R("data synth", "keyword with digits", lambda c: ["--out", c.p("s"), "--keyword", "sheila2"],
      2, "keyword='sheila2'", nothing_under=("s",)),
    R("data synth", "--workers 0", lambda c: ["--out", c.p("s"), "--workers", "0"], 2,
      "workers=0", nothing_under=("s",)),
    # ------------------------------------------------------------------ data download
    R("data download", "unknown --version", lambda c: ["--version", "v3", "--dest", c.p("d")],
      2, "--version 'v3'", nothing_under=("d",)),
    R("data download", "connection refused",
      lambda c: ["--dest", c.p("d"), "--url", f"http://127.0.0.1:{c.closed_port()}/sc.tar.gz"],
      1, "Connection refused", nothing_under=("d",)),
    R("data download", "--url that is not http(s)",
      lambda c: ["--dest", c.p("d"), "--url", "ftp://example.invalid/sc.tar.gz"], 1,
      "expected an http:// or https:// URL", nothing_under=("d",)),
    R("data download", "--from-archive missing file",
      lambda c: ["--dest", c.p("d"), "--from-archive", c.p("nope.tar.gz")], 1, "not found",
      nothing_under=("d",)),
    R("data download", "--from-archive that is not a tar",
      lambda c: ["--dest", c.p("d"), "--from-archive", c.write("x.tar.gz", "not a tar")], 1,
      "cannot unpack", nothing_under=("d",)),
    R("data download", "--from-archive with a member escaping the folder (../)",
      lambda c: ["--dest", c.p("d"), "--from-archive",
                 c.tarball("evil.tar.gz", {"yes/a.wav": b"x", "../../escaped.txt": b"x"})], 1,
      "refusing to unpack", nothing_under=("d",), check=_no_escape),
    R("data download", "--dest already holds files kws did not write",
      lambda c: ["--dest", c.write("d/speech_commands_v0.01/mine.txt", "keep").parent.parent,
                 "--from-archive", c.tarball("ok.tar.gz", {"yes/a.wav": b"x"})], 1,
      "not a complete download", unchanged=("d",)),
]  # fmt: skip


# ---------------------------------------------------------------- running a row


@dataclass
class Seen:
    """What one row did: its exit code, output, the doc's message line, and any problem."""

    row: Row
    exit_code: int | None = None
    output: str = ""
    message: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None


def _snapshot(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_row(row: Row, ctx: Ctx) -> Seen:
    """Build the row's input in ctx.tmp, run the CLI on it, and judge the result."""
    seen = Seen(row)
    if row.skip and (why := row.skip()):
        seen.skipped = why
        return seen
    argv = [*row.command.split(), *(str(a) for a in row.args(ctx))]
    before = {rel: _snapshot(ctx.p(rel)) for rel in row.unchanged}
    res = runner.invoke(app, argv, env=row.env(ctx) if row.env else None)
    seen.exit_code, seen.output = res.exit_code, res.output
    seen.message = _normalise(message_line(res.output, row.fragment), ctx)
    seen.problems = _problems(row, ctx, res.output, res.exit_code, before)
    return seen


def _problems(row: Row, ctx: Ctx, output: str, code: int, before: dict) -> list[str]:
    flat = " ".join(output.split())
    problems = []
    if code != row.exit_code:
        problems.append(f"exit code {code}, expected {row.exit_code}")
    if "Traceback" in output or "internal error" in output:
        problems.append("a traceback / internal error instead of a message")
    if " ".join(row.fragment.split()) not in flat:
        problems.append(f"{row.fragment!r} not in the output")
    if row.exit_code != 0 and not _has_error_line(output):
        problems.append("no `error:` line")
    for rel in row.nothing_under:
        left = _snapshot(ctx.p(rel))
        if left:
            problems.append(f"refused, yet wrote {sorted(_normalise(p, ctx) for p in left)}")
    for rel, old in before.items():
        if _snapshot(ctx.p(rel)) != old:
            problems.append(f"{rel} was changed")
    if row.check and (why := row.check(ctx, output)):
        problems.append(why)
    return problems


def _has_error_line(output: str) -> bool:
    """kws's own `error:` line, or click's usage error (`Error: ...` or its boxed `─ Error ─`)."""
    return any(
        line.startswith(("error:", "Error:")) or "─ Error ─" in line for line in output.splitlines()
    )


def message_line(output: str, fragment: str) -> str:
    """The line the doc shows: the first `error:` (with its indented continuation lines), else
    the first `warning:`, else the line holding the fragment (or the first line)."""
    lines = output.splitlines()
    for prefix in ("error:", "warning:"):
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                more = []
                for nxt in lines[i + 1 :]:
                    if not nxt.startswith("  "):
                        break
                    more.append(nxt.strip())
                return " ".join([line.strip(), *more])
    for i, line in enumerate(lines):
        if "─ Error ─" in line and i + 1 < len(lines):  # click usage error in a rich box
            return "Error: " + lines[i + 1].strip("│ ")
    for line in lines:  # the whole fragment first: its first word alone may be in a tmp path
        if fragment and fragment in line:
            return line.strip()
    first = fragment.split()[0] if fragment.split() else ""
    for line in lines:
        if first and first in line:
            return line.strip()
    return lines[0].strip() if lines else ""


def _normalise(text: str, ctx: Ctx) -> str:
    for real, placeholder in sorted(ctx.subs.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(real, placeholder)
    return text


# ---------------------------------------------------------------- the tests


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row, tmp_path, trained_teacher, tiny_dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative default (runs/teacher/model.pt) finds nothing
    seen = run_row(row, Ctx(tmp_path, trained_teacher, tiny_dataset))
    if seen.skipped:
        pytest.skip(seen.skipped)
    assert not seen.problems, f"{row.id}: {seen.problems}\n{seen.output}"


def test_doc_lists_every_row():
    """docs/bad-inputs.md lists every row under its command, with matching counts."""
    assert len({r.id for r in ROWS}) == len(ROWS), "two rows share a description"
    doc = DOC.read_text(encoding="utf-8")
    sections = _doc_sections(doc)
    assert set(sections) == set(_commands()), "commands in the doc differ from ROWS"
    for command in _commands():
        rows = [r for r in ROWS if r.command == command]
        count, first_cells = sections[command]
        assert count == len(rows) == len(first_cells), f"{command}: counts differ, regenerate"
        for r in rows:
            assert _cell(r.bad_input) in first_cells, f"{r.id} missing from {DOC.name}"
        summary = re.search(rf"^\| `kws {re.escape(command)}` \| (\d+) \|$", doc, re.M)
        assert summary and int(summary.group(1)) == len(rows), f"{command}: summary count"


def _doc_sections(doc: str) -> dict[str, tuple[int, list[str]]]:
    """{command: (count in its heading, first cell of each table row)}."""
    out = {}
    parts = re.split(r"^## `kws (.+?)` \((\d+)\)$", doc, flags=re.M)
    for command, count, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        rows = [ln for ln in body.splitlines() if ln.startswith("| ") and "---" not in ln]
        cells = [ln[2:].split(" | ")[0] for ln in rows[1:]]  # rows[0] is the header
        out[command] = (int(count), cells)
    return out


def _commands() -> list[str]:
    return list(dict.fromkeys(r.command for r in ROWS))


# ---------------------------------------------------------------- the doc


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(seen: list[Seen]) -> str:
    """docs/bad-inputs.md: a count per command, then one table per command of bad input, exit
    code and the message the CLI printed."""
    commands = list(dict.fromkeys(s.row.command for s in seen))
    out = [
        "# Bad inputs, command by command",
        "",
        "Every bad input the `kws` commands were tried with, the exit code each got and the",
        "message the CLI printed (its first `error:` or `warning:` line, or the note it printed",
        "where the input is handled). Each row is one test in `tests/test_bad_inputs.py`, run",
        "through the real CLI: it checks the exit code, that no traceback appears, the message,",
        "and that nothing is written (or changed) where a command refuses.",
        "",
        "Regenerate this file after changing a row or a message:",
        "",
        "    python tests/test_bad_inputs.py",
        "",
        "Exit codes: 0 handled (with a note or warning), 1 error, 2 invalid setting or usage.",
        "Paths read `<tmp>/` for the row's scratch folder, `<data>/` for the tiny dataset the",
        "test teacher was trained on and `<repo>/` for the project.",
        "",
        "| command | bad inputs |",
        "|---|---:|",
        *(f"| `kws {c}` | {sum(s.row.command == c for s in seen)} |" for c in commands),
        f"| total | {len(seen)} |",
    ]
    failing = [s for s in seen if s.problems]
    if failing:
        out += [
            "",
            f"**{len(failing)} rows do not behave as their test expects yet** (marked ✗ below,",
            "with what the test wants).",
        ]
    for command in commands:
        rows = [s for s in seen if s.row.command == command]
        out += [
            "",
            f"## `kws {command}` ({len(rows)})",
            "",
            "| bad input | exit code | message |",
            "|---|---:|---|",
        ]
        for s in rows:
            if s.skipped:
                code, message = "–", f"(not run here: {s.skipped})"
            else:
                code, message = str(s.exit_code), _code_span(s.message)
            if s.problems:
                want = f"exit {s.row.exit_code}, `{s.row.fragment}`"
                message += f" ✗ wanted: {want}; got: {'; '.join(s.problems)}"
            out.append(f"| {_cell(s.row.bad_input)} | {code} | {_cell(message)} |")
    return "\n".join(out) + "\n"


def _code_span(text: str) -> str:
    return f"`` {text} ``" if text else "(no output)"


def main() -> None:
    """Run every row against a freshly trained tiny teacher and write docs/bad-inputs.md."""
    sys.path.insert(0, str(REPO))
    from kwscli import report
    from tests.conftest import make_dataset

    # messages as a wide terminal shows them: rich hard-wraps some lines at 160 columns when
    # output is not a terminal (the tests compare whitespace-normalised text instead)
    report.console.width = report.err_console.width = 1000
    seen = []
    with tempfile.TemporaryDirectory(prefix="kws-bad-") as d:
        base = Path(d)
        os.environ["KWS_CACHE_DIR"] = str(base / "cache")
        data = make_dataset(base / "tiny" / "ds", {"sheila": 60, "yes": 60, "no": 60})
        teacher = _train_teacher(data, base / "teacher-runs")
        cwd = os.getcwd()
        try:
            for i, row in enumerate(ROWS):
                tmp = base / "rows" / f"{i:03d}"
                tmp.mkdir(parents=True)
                os.chdir(tmp)
                seen.append(run_row(row, Ctx(tmp, teacher, data)))
                mark = "skip" if seen[-1].skipped else ("FAIL" if seen[-1].problems else "ok")
                print(f"{mark:4}  {row.id}", *(f"\n      {p}" for p in seen[-1].problems))
        finally:
            os.chdir(cwd)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_table(seen), encoding="utf-8")
    print(f"{len(seen)} rows → {DOC}")


def _train_teacher(data: Path, runs: Path) -> Path:
    """The same tiny teacher as conftest's `trained_teacher` fixture."""
    args = ["teacher", "--data", data, "--runs-dir", runs, "--name", "t", "--epochs", "3",
            "--batch-size", "32", "--hidden-size", "16", "--seed", "0", "--lr", "3e-3",
            "--epoch-size", "640"]  # fmt: skip
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return runs / "t" / "model.pt"


if __name__ == "__main__":
    main()
