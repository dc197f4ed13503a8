"""int8 and fp16 checkpoints: round trips, tolerances, sizes, targets, and the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from kwscli.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from kwscli.cli import app
from kwscli.compress import to_fp16, to_int8
from kwscli.config import FeatureConfig, ModelConfig
from kwscli.errors import ConfigError
from kwscli.evaluate import ModelReport, Targets, check_targets, model_cost
from kwscli.inference import build_model, dynamic_int8_available
from kwscli.metrics import size_bytes
from kwscli.models.crnn import CRNN, input_dtype

runner = CliRunner()


@pytest.fixture
def float_ckpt(tmp_path) -> Checkpoint:
    torch.manual_seed(0)
    model = CRNN(ModelConfig(hidden_size=32), 40).eval()
    ckpt = Checkpoint("teacher", model.config, FeatureConfig(), "sheila", model.state_dict())
    save_checkpoint(ckpt, tmp_path / "model.pt")
    return load_checkpoint(tmp_path / "model.pt")


def _probs(model, x):
    dtype = input_dtype(model)
    with torch.no_grad():
        return torch.softmax(model(x.to(dtype)).float(), dim=-1)[:, 1]


def test_int8_round_trip_loads_weights_only_and_stays_close(float_ckpt, tmp_path):
    q = to_int8(float_ckpt)
    save_checkpoint(q, tmp_path / "q.pt")
    raw = torch.load(tmp_path / "q.pt", weights_only=True)  # no pickled modules inside
    assert raw["kind"] == "int8"
    assert raw["state_dict"]["gru.weight_ih_l0.int8"].dtype == torch.int8
    assert raw["state_dict"]["conv.0.weight"].dtype == torch.float32  # conv stays float
    loaded = build_model(load_checkpoint(tmp_path / "q.pt"))
    x = torch.randn(16, 40, 101)
    diff = (_probs(loaded, x) - _probs(build_model(float_ckpt), x)).abs().max().item()
    assert diff < 0.02  # stated tolerance for int8 weights on random inputs


@pytest.mark.skipif(not dynamic_int8_available(), reason="no dynamic quantization engine")
def test_int8_rebuild_restores_the_exact_integers(float_ckpt):
    from torch.ao.nn.quantized import dynamic as nnqd

    q = to_int8(float_ckpt)
    model = build_model(q)
    gru = next(m for m in model.modules() if isinstance(m, nnqd.GRU))
    for name, w in gru.get_weight().items():
        assert torch.equal(w.int_repr(), q.state_dict[f"gru.{name}.int8"])
        assert w.q_scale() == pytest.approx(float(q.state_dict[f"gru.{name}.scale"]))
    head = model.classifier.weight()
    assert torch.equal(head.int_repr(), q.state_dict["classifier.weight.int8"])


@pytest.mark.parametrize("conv", ["int8", "fp16"])
def test_int8_with_conv_int8_or_fp16_round_trips_and_stays_close(float_ckpt, tmp_path, conv):
    q = to_int8(float_ckpt, conv=conv)
    save_checkpoint(q, tmp_path / "q.pt")
    loaded_ckpt = load_checkpoint(tmp_path / "q.pt")
    assert loaded_ckpt.label == f"int8 (conv {conv})"
    stored = loaded_ckpt.state_dict
    if conv == "int8":
        assert stored["conv.0.weight.int8"].dtype == torch.int8 and "conv.0.weight" not in stored
    else:
        assert stored["conv.0.weight"].dtype == torch.float16
        assert stored["conv.0.bias"].dtype == torch.float16
    model = build_model(loaded_ckpt)
    x = torch.randn(16, 40, 101)
    diff = (_probs(model, x) - _probs(build_model(float_ckpt), x)).abs().max().item()
    assert diff < 0.02  # the int8 tolerance above
    # the fp16 conv runs in half: its rebuilt weights are exactly the stored halves
    if conv == "fp16":
        assert torch.equal(model.conv[0].inner.weight, stored["conv.0.weight"])


@pytest.mark.skipif(not dynamic_int8_available(), reason="no dynamic quantization engine")
def test_int8_conv_rebuild_restores_the_exact_integers(float_ckpt):
    from torch.ao.nn.quantized import dynamic as nnqd

    q = to_int8(float_ckpt, conv="int8")
    conv = build_model(q).conv[0]
    assert isinstance(conv, nnqd.Conv2d)
    assert torch.equal(conv.weight().int_repr(), q.state_dict["conv.0.weight.int8"])


def test_fp16_conv_with_int8_is_smaller_than_int8_alone(float_ckpt):
    int8 = model_cost(to_int8(float_ckpt)).size_bytes
    mixed = model_cost(to_int8(float_ckpt, conv="fp16")).size_bytes
    conv_bytes = sum(v.numel() for k, v in float_ckpt.state_dict.items() if k.startswith("conv."))
    # 4 → 2 bytes per conv value, less a little framing: the wrapper's longer key names and
    # the archive's 64-byte alignment of each stored tensor
    assert 0.8 * 2 * conv_bytes < int8 - mixed <= 2 * conv_bytes + 64


def test_unknown_conv_mode_is_a_config_error(float_ckpt):
    with pytest.raises(ConfigError, match="float, int8, fp16"):
        to_int8(float_ckpt, conv="int4")


def test_fp16_round_trip_runs_in_half_and_stays_close(float_ckpt, tmp_path):
    h = to_fp16(float_ckpt)
    save_checkpoint(h, tmp_path / "h.pt")
    model = build_model(load_checkpoint(tmp_path / "h.pt"))
    assert all(p.dtype == torch.float16 for p in model.parameters())
    x = torch.randn(16, 40, 101)
    diff = (_probs(model, x) - _probs(build_model(float_ckpt), x)).abs().max().item()
    assert diff < 2e-3  # stated tolerance for fp16


@pytest.mark.slow
def test_sizes_shrink_as_expected(float_ckpt):
    base = model_cost(float_ckpt).size_bytes
    fp16 = model_cost(to_fp16(float_ckpt)).size_bytes
    int8 = model_cost(to_int8(float_ckpt)).size_bytes
    assert 1.8 < base / fp16 < 2.05  # every weight halves; the pickle framing does not
    assert base / int8 > 2.5  # GRU + Linear weights quarter, conv and biases stay float
    # MACs and params are counted on the float equivalent: unchanged by compression
    assert model_cost(to_int8(float_ckpt)).macs_2s == model_cost(float_ckpt).macs_2s
    assert model_cost(to_int8(float_ckpt)).params == model_cost(float_ckpt).params


def _report(size, macs, score, path="m.pt"):
    return ModelReport(
        path,
        "student",
        "student",
        "sheila",
        "d",
        "val",
        10,
        2,
        score,
        1.0,
        [],
        1,
        size,
        macs,
        macs,
        0.0,
    )


@pytest.mark.parametrize(
    ("size", "macs", "score", "verdict", "failed"),
    [
        (100, 100, 1.0e-4, "PASS", []),
        (101, 100, 1.0e-4, "FAIL", ["memory"]),  # 9.9x < 10x
        (100, 101, 1.0e-4, "FAIL", ["macs"]),
        (100, 100, 1.11e-4, "FAIL", ["au_fa_fr"]),  # 1.11x > 1.1x
        (100, 100, 1.1e-4, "PASS", []),  # exactly on the target passes
    ],
)
def test_pass_fail_on_constructed_numbers(size, macs, score, verdict, failed):
    base = _report(1000, 1000, 1.0e-4, "teacher.pt")
    t = check_targets(_report(size, macs, score), base, Targets())
    assert t["verdict"] == verdict
    assert sorted(k for k, ok in t["pass"].items() if not ok) == failed
    assert t["memory_ratio"] == 1000 / size and t["macs_ratio"] == 1000 / macs


def test_perfect_baseline_only_matched_by_perfect_model():
    base = _report(1000, 1000, 0.0, "teacher.pt")
    assert check_targets(_report(10, 10, 0.0), base, Targets())["verdict"] == "PASS"
    assert check_targets(_report(10, 10, 1e-9), base, Targets())["verdict"] == "FAIL"


# ---------------------------------------------------------------- CLI


@pytest.fixture
def teacher_copy(trained_teacher, tmp_path):
    shutil.copytree(trained_teacher.parent, tmp_path / "t")
    return tmp_path / "t" / "model.pt"


@pytest.mark.parametrize("command", ["quantize", "fp16"])
def test_cli_compress_reports_and_writes_beside_input(teacher_copy, command):
    res = runner.invoke(app, [command, str(teacher_copy), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    kind = "int8" if command == "quantize" else "fp16"
    out = teacher_copy.with_suffix(f".{kind}.pt")
    assert rep["output"] == str(out) and out.is_file()
    assert rep["size_after"] < rep["size_before"]
    assert rep["au_fa_fr_before"] is not None and rep["max_abs_dprob"] < 0.05
    saved = torch.load(out, weights_only=True)
    assert saved["kind"] == kind
    assert saved["metrics"]["val_au_fa_fr"] == rep["au_fa_fr_after"]

    again = runner.invoke(app, [command, str(out)])  # compressing the result: nothing to do
    assert again.exit_code == 0 and "already" in again.output
    before = out.stat().st_mtime_ns
    twice = runner.invoke(app, [command, str(teacher_copy)])  # never overwritten silently
    assert twice.exit_code == 1 and "--force" in twice.output
    assert out.stat().st_mtime_ns == before


def test_cli_fp16_of_int8_says_what_to_do(teacher_copy):
    assert runner.invoke(app, ["quantize", str(teacher_copy)]).exit_code == 0
    res = runner.invoke(app, ["fp16", str(teacher_copy.with_suffix(".int8.pt"))])
    assert res.exit_code == 1 and "needs the float model" in res.output


def test_cli_compress_refuses_non_kws_file(tmp_path):
    f = tmp_path / "x.pt"
    f.write_bytes(b"\x00" * 100)
    res = runner.invoke(app, ["quantize", str(f)])
    assert res.exit_code == 1 and "not a readable checkpoint" in res.output


def test_cli_compress_refuses_missing_output_folder(teacher_copy, tmp_path):
    res = runner.invoke(app, ["fp16", str(teacher_copy), "--out", str(tmp_path / "no" / "m.pt")])
    assert res.exit_code == 1 and "no such folder" in res.output


def test_cli_evaluate_baseline_pass_fail_and_plots(teacher_copy, tmp_path):
    assert runner.invoke(app, ["fp16", str(teacher_copy)]).exit_code == 0
    plot = tmp_path / "eval.png"
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(teacher_copy.with_suffix(".fp16.pt")),
            "--baseline",
            str(teacher_copy),
            "--plot",
            str(plot),
            "--json",
            "--no-latency",
            "--target-memory",
            "1.5",
        ],
    )
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(res.stdout)
    t = rep["targets"]
    assert t["memory_ratio"] == pytest.approx(
        size_bytes(build_model(load_checkpoint(teacher_copy))) / rep["size_bytes"]
    )
    assert t["pass"]["memory"] is True  # ~2x ≥ 1.5x
    assert t["pass"]["macs"] is False  # fp16 does not cut MACs
    assert t["verdict"] == "FAIL"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert plot.with_suffix(".tradeoff.png").read_bytes()[:4] == b"\x89PNG"
