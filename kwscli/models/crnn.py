"""The course CRNN (SPEC §2): conv → GRU → attention pooling → linear. Teacher and students are
configurations of this one class."""

from __future__ import annotations

import torch
from torch import nn

from kwscli.config import ModelConfig
from kwscli.shapes import conv_width


class AttentionPooling(nn.Module):
    """Softmax attention over time: a_t = softmax_t(w·tanh(W h_t)), output = Σ_t a_t h_t."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.energy = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.energy(h).squeeze(-1), dim=-1)  # (B, T)
        pooled = torch.einsum("bt,bth->bh", weights, h)  # (B, H)
        return pooled, weights


class CRNN(nn.Module):
    """Log-mel (B, n_mels, T) → logits (B, num_classes)."""

    def __init__(self, config: ModelConfig, n_mels: int) -> None:
        super().__init__()
        self.config = config
        self.n_mels = n_mels
        c = config
        self.conv = nn.Sequential(
            nn.Conv2d(1, c.cnn_out_channels, kernel_size=c.kernel_size, stride=c.stride),
            nn.Flatten(start_dim=1, end_dim=2),
        )
        self.gru = nn.GRU(
            input_size=conv_width(c, n_mels),
            hidden_size=c.hidden_size,
            num_layers=c.gru_num_layers,
            batch_first=True,
            dropout=c.dropout if c.gru_num_layers > 1 else 0.0,
            bidirectional=c.bidirectional,
        )
        width = c.hidden_size * (2 if c.bidirectional else 1)
        self.attention = AttentionPooling(width)
        self.classifier = nn.Linear(width, c.num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Conv features as a sequence: (B, n_mels, T) → (B, T', C·F')."""
        x = self.conv(x.unsqueeze(1))  # (B, C·F', T')
        return x.transpose(1, 2)  # (B, T', C·F')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[0]

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, classes), attention weights (B, T') and the pooled embedding (B, H) that
        the classifier reads: what distillation can compare between teacher and student."""
        return self.classify(self.encode(x))

    def classify(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GRU (from a zero state) → attention → classifier over conv sequences (B, T', C·F'):
        the part of `outputs` after the conv, which streaming runs on windows of conv steps."""
        h, _ = self.gru(seq)  # (B, T', H)
        pooled, weights = self.attention(h)  # (B, H), (B, T')
        return self.classifier(pooled), weights, pooled


def keyword_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(keyword): the softmax's class 1, computed in float32 whatever the model's dtype."""
    return torch.softmax(logits.float(), dim=-1)[..., 1]


class HalfPrecision(nn.Module):
    """Runs the wrapped layer in float16 and hands float32 on (an fp16 conv before an int8 GRU)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()).float()


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype to feed `model`: float16 for a model in half precision all through (`kws fp16`),
    float32 for the rest — float models, int8 ones (which quantize their float32 input), and int8
    ones with an fp16 conv (whose `HalfPrecision` casts for itself)."""
    if any(isinstance(m, HalfPrecision) for m in model.modules()):
        return torch.float32
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def input_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
