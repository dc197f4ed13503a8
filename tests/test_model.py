"""The CRNN: the course teacher's parameter count, output shapes, attention weights, a student."""

from __future__ import annotations

import pytest
import torch

from kwscli.config import ModelConfig
from kwscli.models.crnn import CRNN, count_parameters

STUDENT = ModelConfig(cnn_out_channels=3, kernel_size=(7, 20), stride=(7, 12), hidden_size=30)


def expected_parameters(c: ModelConfig, n_mels: int = 40) -> int:
    """Written out from SPEC §2's layers: conv, stacked GRU, attention MLP, classifier."""
    conv = c.cnn_out_channels * c.kernel_size[0] * c.kernel_size[1] + c.cnn_out_channels
    feat = c.cnn_out_channels * ((n_mels - c.kernel_size[0]) // c.stride[0] + 1)
    h = c.hidden_size
    gru = 3 * (h * feat + h * h + 2 * h)
    gru += (c.gru_num_layers - 1) * 3 * (h * h + h * h + 2 * h)
    attention = h * h + h + h + 1
    classifier = h * c.num_classes + c.num_classes
    return conv + gru + attention + classifier


def test_teacher_has_70443_parameters():
    model = CRNN(ModelConfig(), n_mels=40)
    assert count_parameters(model) == 70_443
    assert expected_parameters(ModelConfig()) == 70_443


def test_student_parameter_count_follows_the_layers():
    assert count_parameters(CRNN(STUDENT, 40)) == expected_parameters(STUDENT)


@pytest.mark.parametrize("config", [ModelConfig(), STUDENT], ids=["teacher", "student"])
@pytest.mark.parametrize("frames", [101, 201])
def test_logits_have_shape_batch_by_classes(config, frames):
    torch.manual_seed(0)
    model = CRNN(config, 40).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 40, frames))
    assert out.shape == (3, 2) and torch.isfinite(out).all()


def test_attention_weights_sum_to_one_over_time():
    torch.manual_seed(0)
    model = CRNN(ModelConfig(), 40).eval()
    x = torch.randn(4, 40, 101)
    with torch.no_grad():
        logits, weights, _ = model.outputs(x)
        plain = model(x)
    steps = (101 - 20) // 8 + 1
    assert weights.shape == (4, steps)
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)


def test_student_trains_one_step():
    torch.manual_seed(0)
    model = CRNN(STUDENT, 40)
    x, y = torch.randn(4, 40, 101), torch.tensor([0, 1, 0, 1])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_batch_rows_are_independent():
    """Each clip's logits depend on that clip only (no batch-level mixing in attention)."""
    torch.manual_seed(0)
    model = CRNN(STUDENT, 40).eval()
    x = torch.randn(3, 40, 101)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_bidirectional_doubles_the_pooled_width():
    model = CRNN(ModelConfig(hidden_size=8, bidirectional=True), 40).eval()
    assert model.classifier.in_features == 16
    with torch.no_grad():
        assert model(torch.randn(2, 40, 101)).shape == (2, 2)
