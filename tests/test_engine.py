"""The training loop on a tiny tensor dataset: run files, seeded reproducibility, resume equal to an
uninterrupted run, divergence as a KwsError, and predict."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kwscli.checkpoint import Checkpoint, load_checkpoint
from kwscli.config import FeatureConfig, ModelConfig, TrainConfig
from kwscli.engine import TrainData, train
from kwscli.errors import Interrupted, KwsError
from kwscli.inference import predict
from kwscli.models.crnn import CRNN

SMALL = ModelConfig(cnn_out_channels=2, hidden_size=8)  # 2 GRU layers: dropout draws from torch
N_MELS, FRAMES = 40, 41


def toy_data(augment=None) -> TrainData:
    """48 random log-mels; label 1 when the low bands carry extra energy (learnable)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3 == 0
    x = torch.randn(48, N_MELS, FRAMES, generator=gen)
    x[labels, :10, :] += 1.5
    idx = torch.randperm(48, generator=gen)
    return TrainData(x, labels.long(), x.exp().mean(dim=(1, 2)), idx[:36], idx[36:], augment)


def noisy(x: torch.Tensor, energy: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """An augmentation drawing from the loop's generator, so resume must restore it."""
    return x + 0.1 * torch.randn(x.shape, generator=gen)


def ce(model, x, y):
    return F.cross_entropy(model(x), y)


class Recorder:
    def __init__(self) -> None:
        self.starts, self.steps, self.epochs = [], [], []

    def on_start(self, epochs, steps_per_epoch, start_epoch):
        self.starts.append((epochs, steps_per_epoch, start_epoch))

    def on_step(self, epoch, step, loss):
        self.steps.append((epoch, step))

    def on_epoch_end(self, record):
        self.epochs.append(record.epoch)


def run(
    run_dir: Path,
    epochs: int,
    *,
    seed: int = 0,
    resume: bool = False,
    criterion=ce,
    augment=noisy,
    init_seed: int = 0,
    callbacks=None,
    lr_schedule: str = "constant",
):
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(init_seed)
    model = CRNN(SMALL, N_MELS)
    cfg = TrainConfig(
        batch_size=12,
        num_epochs=epochs,
        seed=seed,
        device="cpu",
        learning_rate=1e-2,
        lr_schedule=lr_schedule,
    )

    def make_checkpoint(metrics):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return Checkpoint("teacher", SMALL, FeatureConfig(), "sheila", state, metrics=metrics)

    result = train(
        model,
        criterion,
        toy_data(augment),
        cfg,
        run_dir,
        make_checkpoint,
        resume=resume,
        callbacks=callbacks,
    )
    return result, model


def comparable(history) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in history]


def test_train_writes_model_last_and_history(tmp_path):
    rec = Recorder()
    result, _ = run(tmp_path / "r", 2, callbacks=rec)
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == ["history.json", "last.pt", "model.pt"]
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["train_loss"] for h in history] == [r.train_loss for r in result.history]
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.metrics["epoch"] == result.best_epoch
    assert ckpt.metrics["val_au_fa_fr"] == result.best_au_fa_fr
    assert result.best_au_fa_fr == min(r.val_au_fa_fr for r in result.history)
    assert rec.starts == [(2, 3, 1)]  # 36 training rows / batch 12
    assert rec.steps == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert rec.epochs == [1, 2]


def test_history_val_metrics_match_predict_on_the_saved_best(tmp_path):
    result, _ = run(tmp_path / "r", 2)
    from kwscli.inference import build_model
    from kwscli.metrics import au_fa_fr

    data = toy_data()
    best = build_model(load_checkpoint(result.checkpoint))
    probs, _ = predict(best, data.features[data.val_idx])
    assert au_fa_fr(probs, data.labels[data.val_idx].numpy()) == pytest.approx(
        result.best_au_fa_fr, abs=1e-12
    )


def test_same_seed_gives_identical_history(tmp_path):
    a, model_a = run(tmp_path / "a", 2)
    b, model_b = run(tmp_path / "b", 2)
    assert comparable(a.history) == comparable(b.history)
    for (k, va), vb in zip(
        model_a.state_dict().items(), model_b.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k


def test_different_seed_gives_a_different_history(tmp_path):
    a, _ = run(tmp_path / "a", 1, seed=0)
    b, _ = run(tmp_path / "b", 1, seed=1)
    assert a.history[0].train_loss != b.history[0].train_loss


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path):
    full, full_model = run(tmp_path / "full", 2)
    run(tmp_path / "split", 1)
    rec = Recorder()
    # a fresh process would build the model from another init: resume must not depend on it
    resumed, resumed_model = run(tmp_path / "split", 2, resume=True, init_seed=99, callbacks=rec)
    assert comparable(resumed.history) == comparable(full.history)
    assert (resumed.best_epoch, resumed.best_au_fa_fr) == (full.best_epoch, full.best_au_fa_fr)
    for k, v in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k
    assert rec.starts == [(2, 3, 2)] and rec.epochs == [2]
    saved = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["epoch"] for h in saved] == [1, 2]


def test_nan_loss_raises_kws_error_naming_epoch_and_step(tmp_path):
    calls = []

    def diverging(model, x, y):
        calls.append(1)
        loss = ce(model, x, y)
        return loss * math.nan if len(calls) == 2 else loss

    with pytest.raises(KwsError) as info:
        run(tmp_path / "r", 2, criterion=diverging)
    msg = str(info.value)
    assert "epoch 1" in msg and "step 2" in msg and "nan" in msg.lower()
    assert str(tmp_path / "r") in msg


def test_infinite_loss_is_caught_too(tmp_path):
    with pytest.raises(KwsError, match="epoch 1, step 1"):
        run(tmp_path / "r", 1, criterion=lambda m, x, y: ce(m, x, y) * math.inf)


def test_cuda_request_without_cuda_is_a_kws_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from kwscli.engine import resolve_device

    with pytest.raises(KwsError, match="--device cpu"):
        resolve_device("cuda")


def test_predict_returns_softmax_probabilities_and_mean_cross_entropy():
    torch.manual_seed(0)
    model = CRNN(SMALL, N_MELS)  # training mode on purpose
    data = toy_data()
    probs, loss = predict(model, data.features, data.labels, batch_size=7)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        logits = model(data.features)
    expected = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
    assert probs.shape == (48,) and probs.dtype == np.float64
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(F.cross_entropy(logits, data.labels).item(), rel=1e-5)


def test_predict_without_labels_and_on_nothing():
    model = CRNN(SMALL, N_MELS)
    probs, loss = predict(model, torch.randn(3, N_MELS, FRAMES))
    assert probs.shape == (3,) and loss == 0.0
    empty, _ = predict(model, torch.zeros(0, N_MELS, FRAMES))
    assert empty.shape == (0,)


@pytest.mark.slow
def test_cosine_schedule_decays_the_rate_per_epoch_and_records_it(tmp_path):
    """lr_schedule=cosine: epoch e runs at lr*(1+cos(pi*(e-1)/E))/2, written to the history; a
    resumed run follows the same schedule."""
    result, _ = run(tmp_path / "c", 4, lr_schedule="cosine")
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [r.lr for r in result.history] == pytest.approx(expected)
    run(tmp_path / "d", 2, lr_schedule="cosine")  # stopped after 2 of 2 ...
    resumed, _ = run(tmp_path / "d", 4, resume=True, lr_schedule="cosine")  # ... then 4
    assert [r.lr for r in resumed.history][2:] == pytest.approx(expected[2:])
    const, _ = run(tmp_path / "k", 2)
    assert [r.lr for r in const.history] == [1e-2, 1e-2]


class CtrlCInEpochEnd(Recorder):
    """Presses Ctrl-C (a real SIGINT to this process) while the epoch-end work runs, then keeps
    working: under Python's default handler the KeyboardInterrupt would land inside this method."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = []

    def on_epoch_end(self, record):
        super().on_epoch_end(record)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(10_000))  # plenty of bytecode boundaries for a pending handler to run at
        self.finished.append(record.epoch)


def test_ctrl_c_during_epoch_end_work_lets_it_finish_then_stops(tmp_path, python_sigint):
    cb = CtrlCInEpochEnd()
    with pytest.raises(Interrupted, match=r"epoch 2: epochs 1-1 are saved"):
        run(tmp_path / "r", epochs=3, callbacks=cb)
    assert cb.finished == [1]  # the epoch-end work was not cut short
    assert [r["epoch"] for r in json.loads((tmp_path / "r" / "history.json").read_text())] == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back


class CtrlCTwice(Recorder):
    def on_step(self, epoch, step, loss):
        super().on_step(epoch, step, loss)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(10_000))


def test_a_second_ctrl_c_interrupts_at_once(tmp_path, python_sigint):
    cb = CtrlCTwice()
    with pytest.raises(Interrupted, match="before any checkpoint"):
        run(tmp_path / "r", epochs=2, callbacks=cb)
    assert cb.steps == [(1, 1)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sampling_weights_decide_which_clips_are_drawn(tmp_path):
    """TrainData.weights replaces the class-balanced sampler: zero weight, never drawn."""
    data = toy_data(augment=None)
    allowed = data.train_idx[[0, 5]]
    data.weights = torch.zeros(len(data.train_idx))
    data.weights[[0, 5]] = torch.tensor([1.0, 3.0])
    seen = []

    def recording_ce(model, x, y):
        seen.append(x.detach().clone())
        return F.cross_entropy(model(x), y)

    torch.manual_seed(0)
    model = CRNN(SMALL, N_MELS)
    cfg = TrainConfig(batch_size=12, num_epochs=1, device="cpu", learning_rate=1e-2)
    ckpt = lambda m: Checkpoint("teacher", SMALL, FeatureConfig(), "sheila", {}, metrics=m)  # noqa: E731
    train(model, recording_ce, data, cfg, tmp_path, ckpt)
    drawn = torch.cat(seen)
    assert len(drawn) == len(data.train_idx)
    hits = [int((drawn == data.features[i]).flatten(1).all(dim=1).sum()) for i in allowed]
    assert sum(hits) == len(drawn)  # only the two weighted clips
    assert hits[1] > hits[0]  # three times the weight: drawn more often (36 draws)


@pytest.mark.slow
def test_a_selection_set_picks_the_best_epoch_by_its_own_au_fa_fr(tmp_path):
    """With a selection set (`--select-on`), the best epoch is the lowest au_fa_fr there (val
    breaking ties), recorded per epoch and in the checkpoint, recomputable from model.pt."""
    from kwscli.inference import build_model
    from kwscli.metrics import au_fa_fr, roc_auc

    data = toy_data(noisy)
    gen = torch.Generator().manual_seed(5)
    sel_labels = torch.arange(30) % 2 == 0
    sel = torch.randn(30, N_MELS, FRAMES, generator=gen)
    sel[sel_labels, :10, :] += 0.4  # a harder version of the task: a different ranking
    data.select_features, data.select_labels = sel, sel_labels.long()
    torch.manual_seed(0)
    model = CRNN(SMALL, N_MELS)
    cfg = TrainConfig(batch_size=12, num_epochs=6, device="cpu", learning_rate=1e-2)

    def make_checkpoint(metrics):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return Checkpoint("teacher", SMALL, FeatureConfig(), "sheila", state, metrics=metrics)

    result = train(model, ce, data, cfg, tmp_path / "r", make_checkpoint)
    from kwscli.engine import SELECT_MIN_VAL_AUC

    keys = [
        (0, r.select_au_fa_fr, r.val_au_fa_fr)
        if r.val_roc_auc >= SELECT_MIN_VAL_AUC
        else (1, r.val_au_fa_fr, 0)
        for r in result.history
    ]
    assert all(r.select_au_fa_fr is not None for r in result.history)
    assert any(k[0] == 0 for k in keys)  # the toy task is learned: selection takes over
    assert result.best_epoch == 1 + keys.index(min(keys))
    best = load_checkpoint(result.checkpoint)
    probs, _ = predict(build_model(best), sel)
    assert best.metrics["select"]["au_fa_fr"] == pytest.approx(au_fa_fr(probs, sel_labels.numpy()))
    assert best.metrics["select"]["roc_auc"] == pytest.approx(roc_auc(probs, sel_labels.numpy()))
