"""The one training loop. Teacher and students differ only in the loss the caller passes in.

`criterion(model, x, y) -> loss` sees the model and the (augmented) batch, so a distillation loss
can run its frozen teacher on the very same inputs. The loop never prints: it reports through
callbacks, and the CLI draws the progress bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from kwscli.checkpoint import Checkpoint, save_checkpoint
from kwscli.config import TrainConfig
from kwscli.errors import KwsError
from kwscli.files import atomic_torch_save, write_json
from kwscli.metrics import au_fa_fr

Criterion = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
BEST, LAST, HISTORY = "model.pt", "last.pt", "history.json"


class Callbacks(Protocol):
    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...
    def on_step(self, epoch: int, step: int, loss: float) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...


class NoCallbacks:
    def on_start(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None: ...
    def on_step(self, epoch: int, step: int, loss: float) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...


@dataclass
class TrainData:
    """Cached log-mels plus which rows train and validate on."""

    features: torch.Tensor  # (N, n_mels, T)
    labels: torch.Tensor  # (N,)
    energy: torch.Tensor  # (N,)
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_au_fa_fr: float
    val_accuracy: float
    seconds: float
    best: bool = False


@dataclass
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    best_au_fa_fr: float
    checkpoint: Path
    stopped_early: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KwsError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def train(
    model: torch.nn.Module,
    criterion: Criterion,
    data: TrainData,
    cfg: TrainConfig,
    run_dir: Path,
    make_checkpoint: Callable[[dict[str, Any]], Checkpoint],
    resume: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train `model`, keeping the best epoch (lowest val au_fa_fr) in `run_dir/model.pt` and a
    resumable state in `run_dir/last.pt` after every epoch."""
    cb = callbacks or NoCallbacks()
    device = resolve_device(cfg.device)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)  # sampling + augmentation
    # --amp: fp16 autocast + loss scaling on CUDA; bf16 autocast (no scaling needed) on CPU
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    history: list[EpochRecord] = []
    best = (math.inf, 0)
    start = 1
    if resume:
        state = torch.load(run_dir / LAST, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = [EpochRecord(**r) for r in state["history"]]
        best = (state["best_au_fa_fr"], state["best_epoch"])
        start = state["epoch"] + 1

    labels = data.labels[data.train_idx]
    counts = torch.bincount(labels, minlength=2).clamp(min=1).double()
    weights = (1.0 / counts)[labels]  # class-balanced, as the course's WeightedRandomSampler
    epoch_size = cfg.epoch_size or len(data.train_idx)
    steps = math.ceil(epoch_size / cfg.batch_size)
    cb.on_start(cfg.num_epochs, steps, start)

    for epoch in range(start, cfg.num_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = data.train_idx[torch.multinomial(weights, epoch_size, True, generator=gen)]
        total, seen = 0.0, 0
        for step in range(steps):
            rows = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, y = data.features[rows], data.labels[rows]
            if data.augment is not None:
                x = data.augment(x, data.energy[rows], gen)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp):
                loss = criterion(model, x, y)
            if not torch.isfinite(loss):
                raise KwsError(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, step {step + 1}; "
                    f"the last good checkpoint is kept in {run_dir} (try a lower --lr)"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(rows)
            seen += len(rows)
            cb.on_step(epoch, step + 1, loss.item())

        probs, val_loss = predict(model, data.features[data.val_idx], data.labels[data.val_idx])
        val_labels = data.labels[data.val_idx].numpy()
        score = au_fa_fr(probs, val_labels)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(seen, 1),
            val_loss=val_loss,
            val_au_fa_fr=score,
            val_accuracy=float(((probs >= 0.5) == (val_labels == 1)).mean()),
            seconds=time.perf_counter() - t0,
        )
        if score < best[0]:
            best = (score, epoch)
            record.best = True
            metrics = {"val_au_fa_fr": score, "val_accuracy": record.val_accuracy, "epoch": epoch}
            save_checkpoint(make_checkpoint(metrics), run_dir / BEST)
        history.append(record)
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": [asdict(r) for r in history],
                "best_au_fa_fr": best[0],
                "best_epoch": best[1],
            },
            run_dir / LAST,
        )
        write_json(run_dir / HISTORY, [asdict(r) for r in history])
        cb.on_epoch_end(record)

    return TrainResult(history, best[1], best[0], run_dir / BEST)


def predict(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> tuple[Any, float]:
    """P(keyword) for each row (numpy float64), and the mean cross-entropy when labels are given."""
    logits = predict_logits(model, features, batch_size)
    probs = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
    loss = F.cross_entropy(logits, labels, reduction="mean").item() if labels is not None else 0.0
    return probs, loss


def predict_logits(
    model: torch.nn.Module, features: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Logits (N, classes) as float32 on the CPU, whatever the model's dtype or device. The softmax
    is always taken in float32 afterwards, so an fp16 model's probabilities do not saturate."""
    first = next(model.parameters())
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(features), batch_size):
            out.append(
                model(features[i : i + batch_size].to(first.device, first.dtype)).float().cpu()
            )
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)
