"""Knowledge-distillation losses. Each is a small module; its docstring is its formula.

z_s, z_t are student and teacher logits (B, C); T is the temperature; p = softmax. Losses that
soften with T are multiplied by T² so their gradients keep the same scale as T changes
(Hinton et al., 2015). `DistillationCriterion` combines them into the engine's
`criterion(model, x, y)`, running the frozen teacher on the very same (augmented) batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwscli.config import LOSSES
from kwscli.shapes import conv_centre


class MSELogits(nn.Module):
    """L = mean over batch and classes of (z_s − z_t)². No temperature."""

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(z_s, z_t)


class SoftCrossEntropy(nn.Module):
    """L = T² · mean_b[ −Σ_c softmax(z_t/T)_c · log softmax(z_s/T)_c ]."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.T = temperature

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        p_t = torch.softmax(z_t / self.T, dim=-1)
        log_p_s = torch.log_softmax(z_s / self.T, dim=-1)
        return -(p_t * log_p_s).sum(dim=-1).mean() * self.T**2


class KLDivergence(nn.Module):
    """L = T² · mean_b[ KL(softmax(z_t/T) ‖ softmax(z_s/T)) ]
         = T² · mean_b[ Σ_c p_t,c · (log p_t,c − log p_s,c) ].
    Equals SoftCrossEntropy minus T²·H(p_t): the same gradient for the student."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.T = temperature

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        log_p_t = torch.log_softmax(z_t / self.T, dim=-1)
        log_p_s = torch.log_softmax(z_s / self.T, dim=-1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return kl * self.T**2


class AttentionTransfer(nn.Module):
    """L = mean_b[ KL(a_t' ‖ a_s) ], a = the attention pooling's weights over time.

    Teacher and student convs have different strides, so their time axes differ (teacher: step
    i covers frames [8i, 8i+20); student with stride 12: [12j, 12j+20)). Each step is placed at
    the centre frame of its receptive field, c = i·stride + (kernel−1)/2; the teacher's
    distribution is linearly interpolated at the student's centres (clamped at the ends) and
    renormalised to sum to 1, giving a_t' on the student's axis. KL is taken teacher → student.
    """

    def __init__(
        self,
        teacher_kernel_t: int,
        teacher_stride_t: int,
        student_kernel_t: int,
        student_stride_t: int,
    ) -> None:
        super().__init__()
        self.teacher = (teacher_kernel_t, teacher_stride_t)
        self.student = (student_kernel_t, student_stride_t)

    def forward(self, a_s: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        target = resample_attention(a_t, self.teacher, a_s.shape[1], self.student)
        log_a_s = torch.log(a_s.clamp_min(1e-12))
        log_target = torch.log(target.clamp_min(1e-12))
        return (target * (log_target - log_a_s)).sum(dim=-1).mean()


class SimilarityPreserving(nn.Module):
    """L = (1/B²)·‖G̃_s − G̃_t‖²_F (Tung & Mori, 2019), G = E·Eᵀ of a batch's pooled embeddings
    E (B, H), each row of G scaled to unit L2 norm (G̃).

    Compares which clips of the batch look alike to each model, so the widths may differ (teacher
    64, student 16) and nothing is learned besides the student. A two-class teacher's logits
    carry one number per clip; its embedding says which clips it groups together (a confusable
    word with the keyword, or apart from it).
    """

    def forward(self, e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        g_s = F.normalize(e_s @ e_s.T, dim=1)
        g_t = F.normalize(e_t @ e_t.T, dim=1)
        return (g_s - g_t).pow(2).sum() / e_s.shape[0] ** 2


def resample_attention(
    a: torch.Tensor, src: tuple[int, int], length: int, dst: tuple[int, int]
) -> torch.Tensor:
    """Map attention weights (B, L_src) from one conv's time axis onto another's (B, length)."""
    k_src, s_src = src
    k_dst, s_dst = dst
    src_c = conv_centre(torch.arange(a.shape[1], dtype=a.dtype, device=a.device), k_src, s_src)
    dst_c = conv_centre(torch.arange(length, dtype=a.dtype, device=a.device), k_dst, s_dst)
    pos = ((dst_c - src_c[0]) / s_src).clamp(0, a.shape[1] - 1)  # fractional source index
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=a.shape[1] - 1)
    frac = pos - lo
    out = a[:, lo] * (1 - frac) + a[:, hi] * frac  # (B, length)
    return out / out.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def hard_negative_weights(
    teacher: nn.Module, features: torch.Tensor, labels: torch.Tensor, share: float
) -> torch.Tensor:
    """Sampling weights over training clips that spend the student's draws where the teacher
    itself hesitates. Half the draws are keyword clips, uniformly (the course's class-balanced
    sampler); of the other half, a share `share` is drawn in proportion to the teacher's
    P(keyword) on the clean clip (the confusable words: "sheena" for "sheila"), the rest
    uniformly:

        w_i = 1 / (2·N_pos)                                   for keyword clips,
        w_i = ((1 − share) / N_neg + share · p_i / Σ_neg p) / 2   for the others.
    """
    from kwscli.engine import class_balanced_weights
    from kwscli.inference import predict

    y = labels.bool()
    weights = class_balanced_weights(labels.long()) / 2
    n_neg = int((~y).sum())
    if share == 0 or n_neg == 0:
        return weights
    p = torch.from_numpy(predict(teacher, features[~y])[0])
    hard = p / p.sum() if p.sum() > 0 else torch.full_like(p, 1.0 / n_neg)
    weights[~y] = ((1 - share) / n_neg + share * hard) / 2
    return weights


def describe(
    loss: str, alpha: float, attention_weight: float, similarity_weight: float = 0.0
) -> tuple[str, bool]:
    """A run's loss in words, and whether its temperature matters: `kl+attention`, `mse`,
    `labels only` (alpha 0: the from-scratch baseline)."""
    extras = "+attention" if attention_weight > 0 else ""
    extras += "+similarity" if similarity_weight > 0 else ""
    if alpha == 0:
        return ("labels" + extras if extras else "labels only"), False
    name = loss + extras
    return (name + f"+{1 - alpha:g}*labels" if alpha < 1 else name), loss in ("ce", "kl")


def logit_loss(name: str, temperature: float) -> nn.Module:
    if name == "mse":
        return MSELogits()
    if name == "ce":
        return SoftCrossEntropy(temperature)
    if name == "kl":
        return KLDivergence(temperature)
    raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")


class DistillationCriterion(nn.Module):
    """loss = α·distill(z_s, z_t) + (1−α)·CE(z_s, y) + w_att·AttentionTransfer(a_s, a_t)
              + w_sim·SimilarityPreserving(e_s, e_t).

    The teacher is frozen (eval mode, no gradients); only the student learns.
    """

    def __init__(
        self,
        teacher: nn.Module,
        loss: str = "kl",
        temperature: float = 4.0,
        alpha: float = 1.0,
        attention_weight: float = 0.0,
        attention: AttentionTransfer | None = None,
        similarity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.distill = logit_loss(loss, temperature)
        self.alpha = alpha
        self.attention_weight = attention_weight
        self.attention = attention
        self.similarity_weight = similarity_weight
        self.similarity = SimilarityPreserving()

    def forward(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        use_att = self.attention is not None and self.attention_weight > 0
        use_sim = self.similarity_weight > 0
        if self.alpha == 0 and not (use_att or use_sim):  # labels only: from-scratch baseline
            return F.cross_entropy(student(x).float(), y)
        with torch.no_grad():
            z_t, a_t, e_t = self.teacher.outputs(x)
        z_s, a_s, e_s = student.outputs(x)
        z_s, z_t = z_s.float(), z_t.float()
        loss = self.alpha * self.distill(z_s, z_t)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(z_s, y)
        if use_att:
            loss = loss + self.attention_weight * self.attention(a_s.float(), a_t.float())
        if use_sim:
            loss = loss + self.similarity_weight * self.similarity(e_s.float(), e_t.float())
        return loss

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # dropout off in the teacher, always
        return self
