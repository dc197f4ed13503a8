"""Metrics: au_fa_fr against the course's O(N²) loop and a pairwise formula; FRR at a FAR; MACs,
size and latency of a model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kwscli.config import ModelConfig
from kwscli.metrics import (
    accuracy,
    au_fa_fr,
    count_macs,
    error_counts,
    fa_fr_curve,
    frr_at_far,
    latency_ms,
    size_bytes,
)
from kwscli.models.crnn import CRNN
from tests.reference import au_fa_fr_reference


def pairwise_au_fa_fr(probs, labels) -> float:
    """Independent form of the area: each (negative, positive) pair adds 1/N² when the positive
    scores below the negative, ½/N² on a tie. Negatives at exactly 1.0 never leave the FA count
    (the sweep ends at threshold 1), so they add nothing."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    neg, pos = p[~y & (p < 1.0)], p[y]
    below = (pos[None, :] < neg[:, None]).sum()
    ties = (pos[None, :] == neg[:, None]).sum()
    return float((below + 0.5 * ties) / p.size**2)


def brute_operating_point(probs, labels, target: float):
    """The lowest candidate threshold (0, every score, or 'above all') with FAR ≤ target."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    candidates = sorted({0.0, *p.tolist()}) + [np.inf]
    for t in candidates:
        far = np.sum(p[~y] >= t) / max((~y).sum(), 1)
        frr = np.sum(p[y] < t) / max(y.sum(), 1)
        if far <= target:
            return t, far, frr
    raise AssertionError("unreachable: nothing fires above all scores")


def random_case(rng: np.random.Generator, n: int, decimals: int | None = None):
    p = rng.random(n)
    if decimals is not None:
        p = np.round(p, decimals)
    return p, (rng.random(n) < 0.3).astype(np.int64)


# ---------------------------------------------------------------- au_fa_fr


def test_au_fa_fr_hand_computed_example():
    """Negatives 0.1, 0.4; positives 0.35, 0.8: one positive below one negative → 1/16."""
    probs, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert au_fa_fr(probs, labels) == pytest.approx(1 / 16, abs=1e-15)
    assert au_fa_fr_reference(probs, labels) == pytest.approx(1 / 16, abs=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 31, 100, 257])
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_au_fa_fr_matches_course_loop_and_pairwise_form(n, decimals):
    rng = np.random.default_rng(n * 10 + (decimals or 0))
    p, y = random_case(rng, n, decimals)
    ref = au_fa_fr_reference(p, y)
    assert au_fa_fr(p, y) == pytest.approx(ref, abs=1e-12)
    assert pairwise_au_fa_fr(p, y) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize(
    "probs, labels",
    [
        ([0.5] * 6, [0, 1, 0, 1, 1, 0]),  # all scores equal
        ([0.0, 0.0, 1.0, 1.0], [0, 1, 0, 1]),  # scores exactly 0 and 1
        ([1.0, 1.0, 0.0], [0, 0, 1]),  # worst case: every negative at 1
        ([0.0, 1.0], [0, 1]),  # perfect separation at the ends
        ([0.3, 0.3, 0.7, 0.7, 0.7], [1, 0, 0, 1, 1]),
        ([0.2, 0.9, 0.4], [0, 0, 0]),  # only negatives
        ([0.2, 0.9, 0.4], [1, 1, 1]),  # only positives
        ([0.7], [0]),  # N = 1
        ([0.7], [1]),
        ([1.0], [0]),
        ([0.0], [1]),
    ],
)
def test_au_fa_fr_matches_course_loop_on_ties_and_edges(probs, labels):
    ref = au_fa_fr_reference(probs, labels)
    assert au_fa_fr(probs, labels) == pytest.approx(ref, abs=1e-12)
    assert pairwise_au_fa_fr(probs, labels) == pytest.approx(ref, abs=1e-12)


def test_au_fa_fr_is_zero_for_one_class_and_perfect_separation():
    assert au_fa_fr([0.1, 0.5, 0.9], [0, 0, 0]) == 0.0
    assert au_fa_fr([0.1, 0.5, 0.9], [1, 1, 1]) == 0.0
    assert au_fa_fr([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0


def test_au_fa_fr_rejects_an_empty_set():
    with pytest.raises(ValueError, match="empty"):
        au_fa_fr([], [])


unit_floats = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            arrays(
                np.float64, n, elements=st.one_of(unit_floats, st.sampled_from([0.0, 0.5, 1.0]))
            ),
            arrays(np.int64, n, elements=st.integers(0, 1)),
        )
    )
)
@pytest.mark.slow
def test_au_fa_fr_matches_course_loop_on_random_arrays(case):
    p, y = case
    ref = au_fa_fr_reference(p, y)
    assert au_fa_fr(p, y) == pytest.approx(ref, abs=1e-12)
    assert pairwise_au_fa_fr(p, y) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------- operating points


def test_error_counts_hand_computed():
    probs = [0.1, 0.4, 0.4, 0.6, 0.9]
    labels = [0, 1, 0, 1, 0]
    fa, fr = error_counts(probs, labels, [0.0, 0.4, 0.5, 1.0])
    assert fa.tolist() == [3, 2, 1, 0]  # negatives 0.1, 0.4, 0.9 with p ≥ t
    assert fr.tolist() == [0, 0, 1, 2]  # positives 0.4, 0.6 with p < t


def test_error_counts_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 values but labels has 2"):
        error_counts([0.1, 0.2, 0.3], [0, 1], [0.5])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=unit_floats),
            arrays(np.int64, n, elements=st.integers(0, 1)),
        )
    )
)
def test_fa_fr_curve_is_monotonic_from_all_firing_to_none(case):
    p, y = case
    t, far, frr = fa_fr_curve(p, y)
    assert np.all(np.diff(t) > 0)
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0)
    assert far[-1] == 0.0 and frr[-1] == (1.0 if y.any() else 0.0)  # nothing fires
    assert far[0] == (1.0 if (~y.astype(bool)).any() else 0.0) and frr[0] == 0.0  # all fire
    assert np.all((far >= 0) & (far <= 1) & (frr >= 0) & (frr <= 1))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.floats(0.0, 0.999, allow_nan=False)),
            arrays(np.int64, n, elements=st.integers(0, 1)),
        )
    ),
    st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.5, 1.0]),
)
@pytest.mark.slow
def test_frr_at_far_matches_a_brute_force_scan(case, target):
    p, y = case
    t, far, frr = brute_operating_point(p, y, target)
    op = frr_at_far(p, y, target)
    assert op.target_far == target
    assert op.far == pytest.approx(far) and op.frr == pytest.approx(frr)
    if np.isfinite(t):
        assert op.threshold == t
    assert op.far <= target


def test_frr_at_far_hand_computed():
    probs = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.95]
    labels = [0, 0, 0, 1, 0, 1, 1]
    op = frr_at_far(probs, labels, target_far=0.25)  # 4 negatives: at most one may fire
    assert op.threshold == 0.6 and op.far == 0.25 and op.frr == 0.0
    op = frr_at_far(probs, labels, target_far=0.0)
    assert op.threshold == 0.8 and op.far == 0.0 and op.frr == pytest.approx(1 / 3)


def test_frr_at_far_threshold_reproduces_its_rates_when_a_negative_scores_one():
    """A float32 softmax often gives exactly 1.0: the reported threshold, applied as p ≥ t,
    must give the reported FAR (≤ target), not fire on the negative at 1.0."""
    probs = np.array([0.2, 0.9, 1.0, 0.3])
    labels = np.array([1, 1, 0, 0])
    op = frr_at_far(probs, labels, target_far=0.0)
    fired_negatives = np.mean(probs[labels == 0] >= op.threshold)
    assert op.far == 0.0
    assert fired_negatives == op.far, (
        f"threshold {op.threshold} fires on {fired_negatives:.0%} of negatives, "
        f"but the operating point reports far={op.far}"
    )


def test_accuracy_counts_threshold_hits():
    assert accuracy([0.2, 0.5, 0.7, 0.4], [0, 1, 0, 0]) == 0.75
    assert accuracy([0.2, 0.5, 0.7, 0.4], [0, 1, 0, 0], threshold=0.8) == 0.75
    assert accuracy([0.2, 0.5, 0.7, 0.4], [0, 1, 1, 0], threshold=0.3) == 0.75


# ---------------------------------------------------------------- cost


def teacher() -> CRNN:
    torch.manual_seed(0)
    return CRNN(ModelConfig(), n_mels=40)


@pytest.mark.parametrize("frames", [21, 29, 60, 101, 150, 201])
def test_count_macs_of_teacher_follows_course_formula(frames):
    """SPEC §2: L·84,880 + 128 MACs with L = (T − 20)//8 + 1 post-conv steps."""
    steps = (frames - 20) // 8 + 1
    assert count_macs(teacher(), 40, frames) == steps * 84_880 + 128


def test_count_macs_course_figures_for_one_and_two_seconds():
    model = teacher()
    assert count_macs(model, 40, 101) == 933_808
    assert count_macs(model, 40, 201) == 1_952_368


def test_count_macs_leaves_the_model_untouched():
    model = teacher()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buffers_before = [name for name, _ in model.named_buffers()]
    count_macs(model, 40, 101)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [name for name, _ in model.named_buffers()] == buffers_before
    assert not any("total_ops" in k or "total_params" in k for k in after)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert model.training  # mode not flipped to eval


def test_count_macs_of_fp16_model_equals_float():
    model = teacher()
    assert count_macs(model.half(), 40, 101) == 933_808


def test_size_bytes_is_torch_save_of_state_dict():
    model = teacher()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert size_bytes(model) == len(buf.getvalue())
    # the weights dominate: 70,443 float32 parameters, plus a little zip/pickle overhead
    assert 70_443 * 4 < size_bytes(model) < 70_443 * 4 + 20_000


def test_latency_ms_is_a_positive_float_and_restores_threads():
    threads = torch.get_num_threads()
    model = CRNN(ModelConfig(hidden_size=8, gru_num_layers=1), 40).eval()
    ms = latency_ms(model, 40, 101, repeats=3)
    assert isinstance(ms, float) and ms > 0
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_is_the_share_of_correctly_ordered_pairs(seed):
    """Against the pairwise definition by brute force, ties counted half (rounded scores)."""
    from kwscli.metrics import roc_auc

    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.2
    p = np.round(rng.random(200) * 0.5 + 0.4 * y, 1 + seed % 2)
    pos, neg = p[y][:, None], p[~y][None, :]
    pairs = (pos > neg).sum() + 0.5 * (pos == neg).sum()
    assert roc_auc(p, y) == pytest.approx(pairs / (pos.size * neg.size), abs=1e-12)


def test_roc_auc_and_recall_at_far_hand_computed():
    from kwscli.metrics import recall_at_far, roc_auc

    p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    y = [1, 0, 1, 0, 1, 0]
    assert roc_auc(p, y) == pytest.approx(6 / 9)  # positive beats negative in 6 of 9 pairs
    assert recall_at_far(p, y, 0.0) == pytest.approx(1 / 3)  # above every negative: 0.9 only
    assert recall_at_far(p, y, 0.34) == pytest.approx(2 / 3)  # one of three negatives may fire
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [1, 1])
