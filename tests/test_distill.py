"""Distillation losses pinned to hand-computed values, and `kws distill` through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from kwscli.cli import app
from kwscli.config import ModelConfig
from kwscli.distill import (
    AttentionTransfer,
    DistillationCriterion,
    KLDivergence,
    MSELogits,
    SimilarityPreserving,
    SoftCrossEntropy,
    hard_negative_weights,
    resample_attention,
)
from kwscli.models.crnn import CRNN

Z_S = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
Z_T = torch.tensor([[2.0, 0.0], [0.0, 1.0]])


def _softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def test_mse_by_hand():
    expected = ((1 - 2) ** 2 + (2 - 0) ** 2 + 0.5**2 + 1.5**2) / 4
    assert MSELogits()(Z_S, Z_T).item() == pytest.approx(expected)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_cross_entropy_by_hand_with_t_squared(T):
    total = 0.0
    for s, t in zip(Z_S.tolist(), Z_T.tolist(), strict=True):
        p_t, p_s = _softmax(t, T), _softmax(s, T)
        total += -sum(a * math.log(b) for a, b in zip(p_t, p_s, strict=True))
    assert SoftCrossEntropy(T)(Z_S, Z_T).item() == pytest.approx(T * T * total / 2, rel=1e-6)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_kl_by_hand_with_t_squared(T):
    total = 0.0
    for s, t in zip(Z_S.tolist(), Z_T.tolist(), strict=True):
        p_t, p_s = _softmax(t, T), _softmax(s, T)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s, strict=True))
    assert KLDivergence(T)(Z_S, Z_T).item() == pytest.approx(T * T * total / 2, rel=1e-6)


def test_kl_equals_ce_minus_teacher_entropy():
    T = 2.5
    p_t = torch.softmax(Z_T / T, dim=-1)
    entropy = -(p_t * p_t.log()).sum(-1).mean() * T * T
    ce, kl = SoftCrossEntropy(T)(Z_S, Z_T), KLDivergence(T)(Z_S, Z_T)
    assert kl.item() == pytest.approx(ce.item() - entropy.item(), rel=1e-6)
    assert KLDivergence(T)(Z_T, Z_T).item() == pytest.approx(0.0, abs=1e-7)


def _pair(seed=0):
    torch.manual_seed(seed)
    teacher = CRNN(ModelConfig(hidden_size=16), 40)
    student = CRNN(
        ModelConfig(cnn_out_channels=3, kernel_size=(7, 20), stride=(7, 12), hidden_size=8), 40
    )
    return teacher, student


def test_alpha_mixes_distillation_and_label_loss():
    teacher, student = _pair()
    student.eval(), teacher.eval()  # no dropout: the hand computation must see the same nets
    x, y = torch.randn(4, 40, 101), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        z_s, z_t = student(x), teacher(x)
    kd = KLDivergence(4.0)(z_s, z_t).item()
    ce = torch.nn.functional.cross_entropy(z_s, y).item()
    crit = DistillationCriterion(teacher, "kl", 4.0, alpha=0.3)
    assert crit(student, x, y).item() == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-5)
    assert DistillationCriterion(teacher, "kl", 4.0, 1.0)(student, x, y).item() == pytest.approx(
        kd, rel=1e-5
    )


def test_gradients_reach_the_student_only():
    teacher, student = _pair()
    crit = DistillationCriterion(
        teacher,
        "ce",
        2.0,
        alpha=0.5,
        attention_weight=1.0,
        attention=AttentionTransfer(20, 8, 20, 12),
    )
    crit(student, torch.randn(3, 40, 101), torch.tensor([0, 1, 1])).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_resample_attention_identity_and_mass():
    a = torch.softmax(torch.randn(2, 11), dim=-1)
    same = resample_attention(a, (20, 8), 11, (20, 8))
    assert torch.allclose(same, a, atol=1e-6)
    other = resample_attention(a, (20, 8), 7, (20, 12))
    assert other.shape == (2, 7)
    assert torch.allclose(other.sum(-1), torch.ones(2), atol=1e-6)


def test_resample_attention_follows_time_not_index():
    """A teacher peak at frame ~50 lands on the student step whose window is centred nearest 50."""
    a = torch.zeros(1, 11)
    a[0, 5] = 1.0  # teacher step 5: frames [40, 60), centre 49.5
    out = resample_attention(a, (20, 8), 7, (20, 12))
    student_centres = torch.arange(7) * 12 + 9.5
    assert out.argmax().item() == (student_centres - 49.5).abs().argmin().item()


@pytest.mark.slow
def test_attention_distillation_pulls_student_attention_toward_teacher():
    teacher, student = _pair(1)
    x, y = torch.randn(16, 40, 101), torch.randint(0, 2, (16,))
    att = AttentionTransfer(20, 8, 20, 12)

    def gap():
        with torch.no_grad():
            _, a_t, _ = teacher.outputs(x)
            _, a_s, _ = student.outputs(x)
        return att(a_s, a_t).item()

    before = gap()
    crit = DistillationCriterion(teacher, "kl", 4.0, 1.0, attention_weight=1.0, attention=att)
    _fit(crit, student, x, y)
    assert gap() < 0.5 * before


def _fit(criterion, student, x, y, steps: int = 30) -> None:
    """A few Adam steps of `student` on one batch under `criterion`."""
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        criterion(student, x, y).backward()
        opt.step()


# ---------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize(
    "loss_args",
    [
        ["--loss", "mse"],
        ["--loss", "ce", "--temperature", "2"],
        ["--loss", "kl", "--temperature", "4", "--alpha", "0.5"],
        ["--loss", "kl", "--attention-weight", "1"],
        ["--loss", "kl", "--mixup", "0.5"],
        ["--loss", "kl", "--hard-negatives", "0.5"],
        ["--loss", "kl", "--similarity-weight", "100"],
    ],
)
def test_distill_each_loss_through_cli(trained_teacher, tmp_path, loss_args, amp):
    res = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(trained_teacher),
            *loss_args,
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--hidden-size",
            "8",
            "--runs-dir",
            str(tmp_path),
            "--amp" if amp else "--no-amp",
        ],
    )
    assert res.exit_code == 0, res.output
    (run,) = list(tmp_path.iterdir())
    ckpt = torch.load(run / "model.pt", weights_only=True)
    assert ckpt["kind"] == "student"
    assert ckpt["info"]["teacher"]["path"] == str(trained_teacher.resolve())
    assert ckpt["info"]["distill"]["loss"] == loss_args[1]
    assert ckpt["info"]["train"]["amp"] is amp
    assert ckpt["info"]["distill"]["mixup"] == (0.5 if "--mixup" in loss_args else 0.0)
    hard = 0.5 if "--hard-negatives" in loss_args else 0.0
    assert ckpt["info"]["distill"]["hard_negatives"] == hard
    assert ckpt["model"]["cnn_out_channels"] == 3  # the SPEC's final student by default
    assert json.loads((run / "history.json").read_text())[0]["epoch"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--temperature", "0"], "--temperature"),
        (["--alpha", "1.5"], "--alpha"),
        (["--loss", "l2"], "'l2' is not one of"),
        (["--n-mels", "20"], "teacher's features"),
        (["--keyword", "yes"], "teacher spots 'sheila'"),
        (["--mixup", "0.5", "--alpha", "0.5"], "needs alpha=1"),
        (["--mixup", "1.5"], "--mixup"),
        (["--hard-negatives", "-0.1"], "--hard-negatives"),
        (["--similarity-weight", "-1"], "--similarity-weight"),
    ],
)
def test_distill_bad_settings(trained_teacher, args, needle):
    res = runner.invoke(
        app, ["distill", "--teacher", str(trained_teacher), *args, "--print-config"]
    )
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert needle in res.output, res.output


def test_distill_refuses_a_non_checkpoint_teacher(tmp_path):
    bad = tmp_path / "t.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["distill", "--teacher", str(bad)])
    assert res.exit_code == 1 and "not a readable checkpoint" in res.output


def test_distill_warns_when_student_is_not_smaller(trained_teacher):
    res = runner.invoke(
        app,
        [
            "distill",
            "--teacher",
            str(trained_teacher),
            "--hidden-size",
            "64",
            "--cnn-out-channels",
            "8",
            "--stride",
            "2",
            "8",
            "--kernel-size",
            "5",
            "20",
            "--print-config",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "not smaller than its teacher" in res.output


def test_alpha_zero_is_labels_only_and_never_runs_the_teacher():
    teacher, student = _pair()
    student.eval()

    def refuse(*a, **k):
        raise AssertionError("teacher ran")

    teacher.forward = refuse
    x, y = torch.randn(4, 40, 101), torch.tensor([0, 1, 1, 0])
    expected = torch.nn.functional.cross_entropy(student(x), y)
    assert DistillationCriterion(teacher, "kl", 4.0, alpha=0.0)(student, x, y).item() == (
        pytest.approx(expected.item())
    )


@pytest.mark.parametrize(
    ("loss", "alpha", "att", "sim", "label", "uses_t"),
    [
        ("kl", 1.0, 0.0, 0.0, "kl", True),
        ("kl", 0.0, 0.0, 0.0, "labels only", False),
        ("mse", 1.0, 1.0, 0.0, "mse+attention", False),
        ("ce", 0.5, 0.0, 0.0, "ce+0.5*labels", True),
        ("kl", 0.0, 2.0, 0.0, "labels+attention", False),
        ("kl", 1.0, 1.0, 100.0, "kl+attention+similarity", True),
        ("kl", 0.0, 0.0, 100.0, "labels+similarity", False),
    ],
)
def test_describe_names_what_a_run_actually_optimised(loss, alpha, att, sim, label, uses_t):
    from kwscli.distill import describe

    assert describe(loss, alpha, att, sim) == (label, uses_t)


# ---------------------------------------------------------------- hard negatives


class MeanTeacher(torch.nn.Module):
    """A teacher whose P(keyword) is sigmoid(mean of the input): known in closed form."""

    def forward(self, x):
        m = x.mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(m), m], dim=1)


def test_hard_negative_weights_by_hand():
    x = torch.stack([torch.full((4, 5), v) for v in (-3.0, -1.0, 0.0, 2.0, 1.0)])
    labels = torch.tensor([0, 0, 0, 0, 1])
    w = hard_negative_weights(MeanTeacher(), x, labels, share=0.6).tolist()
    p = [1 / (1 + math.exp(-v)) for v in (-3.0, -1.0, 0.0, 2.0)]
    expected = [((1 - 0.6) / 4 + 0.6 * pi / sum(p)) / 2 for pi in p] + [0.5]
    assert w == pytest.approx(expected, rel=1e-6)
    assert sum(w) == pytest.approx(1.0)
    # share 0: the course's class-balanced sampler, each class half the draws
    assert hard_negative_weights(MeanTeacher(), x, labels, 0.0).tolist() == pytest.approx(
        [0.125] * 4 + [0.5]
    )


# ---------------------------------------------------------------- similarity preserving


def test_similarity_preserving_by_hand():
    """(1/B²)·Σ (row-normalised G_s − row-normalised G_t)², computed with plain Python."""
    e_s = [[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]
    e_t = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]

    def normalised_gram(e):
        g = [[sum(a * b for a, b in zip(u, v, strict=True)) for v in e] for u in e]
        return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in g]

    gs, gt = normalised_gram(e_s), normalised_gram(e_t)
    expected = sum((gs[i][j] - gt[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    got = SimilarityPreserving()(torch.tensor(e_s), torch.tensor(e_t)).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # widths may differ; equal geometry (a rotation and a scale) gives zero
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    e = torch.tensor(e_s)
    assert SimilarityPreserving()(e, 3 * e @ rot).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.slow
def test_similarity_term_adds_to_the_criterion_and_pulls_embeddings_together():
    torch.manual_seed(0)
    cfg = ModelConfig(
        cnn_out_channels=2, kernel_size=(5, 10), stride=(5, 4), hidden_size=6, gru_num_layers=1
    )
    teacher, student = CRNN(ModelConfig(hidden_size=12), 40), CRNN(cfg, 40)
    x, y = torch.randn(16, 40, 101), torch.randint(0, 2, (16,))
    sp = SimilarityPreserving()
    plain = DistillationCriterion(teacher, "kl", 4.0)(student, x, y)
    with_sim = DistillationCriterion(teacher, "kl", 4.0, similarity_weight=50.0)
    e_t = teacher.outputs(x)[2].detach()
    expected = plain + 50.0 * sp(student.outputs(x)[2], e_t)
    assert with_sim(student, x, y).item() == pytest.approx(expected.item(), rel=1e-5)

    def gap() -> float:
        with torch.no_grad():
            return sp(student.outputs(x)[2], e_t).item()

    before = gap()
    _fit(with_sim, student, x, y)
    assert gap() < 0.5 * before
