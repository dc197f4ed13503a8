"""`kws demo --fast`: the whole journey through the real CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kwscli.checkpoint import load_checkpoint
from kwscli.cli import app


@pytest.mark.slow
def test_demo_fast_runs_the_journey_and_says_where_everything_is(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for stage in ("1/7", "4/7", "6/7", "7/7", "threshold", "keyword said at", "done in"):
        assert stage in res.output
    kinds = {p: load_checkpoint(p).kind for p in (out / "runs").rglob("*.pt")
             if p.name != "last.pt"}  # fmt: skip
    assert sorted(kinds.values()) == ["fp16", "fp16", "int8", "student", "teacher"]
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "recording.wav").is_file() and str(out / "recording.wav") in res.output
    assert res.output.count("PASS") + res.output.count("FAIL") == 3  # a verdict per model
