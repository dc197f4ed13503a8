"""The one training loop. Teacher and students differ only in the loss the caller passes in.

`criterion(model, x, y) -> loss` sees the model and the (augmented) batch, so a distillation loss
can run its frozen teacher on the very same inputs. The loop never prints: it reports through
callbacks, and the CLI draws the progress bar. Under torchrun (kwscli/distributed.py) each rank
trains on its share of every batch through DDP, and only rank 0 reports and writes.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from kwscli import distributed
from kwscli.checkpoint import Checkpoint, save_checkpoint
from kwscli.config import TrainConfig
from kwscli.errors import Interrupted, KwsError
from kwscli.files import atomic_torch_save, write_json
from kwscli.inference import predict
from kwscli.metrics import accuracy, au_fa_fr, recall_at_far, roc_auc

Criterion = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
BEST, LAST, HISTORY = "model.pt", "last.pt", "history.json"
# With a selection set, an epoch competes on it only once it has learned the task on its own
# data (validation ROC AUC at least this): a few real keyword clips can rank an untrained model
# well by chance, and picking it would not transfer. Not higher: on real voices a model trained
# on synthetic speech peaks while its synthetic validation is still improving (about 0.96 here).
SELECT_MIN_VAL_AUC = 0.95


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
    weights: torch.Tensor | None = None  # (len(train_idx),) sampling weights; None = balanced
    # --select-on: a (real) set that picks the best epoch instead of the validation split
    select_features: torch.Tensor | None = None
    select_labels: torch.Tensor | None = None


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_au_fa_fr: float
    val_accuracy: float
    seconds: float
    best: bool = False
    lr: float = 0.0  # the learning rate this epoch ran at
    val_roc_auc: float | None = None
    select_au_fa_fr: float | None = None  # on the --select-on set, when given
    select_roc_auc: float | None = None
    select_recall_1pct: float | None = None  # recall at 1 % false positives


@dataclass
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    best_au_fa_fr: float
    checkpoint: Path
    extras: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return distributed.place(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KwsError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return distributed.place(torch.device(name))


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
    """Train `model`, keeping the best epoch (lowest val au_fa_fr; with a selection set, lowest
    au_fa_fr there, val breaking ties) in `run_dir/model.pt` and a resumable state in
    `run_dir/last.pt` after every epoch. Ctrl-C leaves both consistent."""
    loop = _Loop(model, criterion, data, cfg, run_dir, make_checkpoint)
    if resume:
        loop.restore()
    cb = (callbacks if distributed.is_main() else None) or NoCallbacks()  # rank 0 reports
    cb.on_start(cfg.num_epochs, loop.steps, loop.epoch + 1)
    try:
        with StopOnCtrlC() as stop:
            while loop.epoch < cfg.num_epochs:
                stop.check()  # a Ctrl-C during the last epoch's saving and plotting
                cb.on_epoch_end(loop.run_epoch(cb, stop))
    except KeyboardInterrupt:
        if not loop.epoch and not resume:
            raise Interrupted(
                "interrupted during epoch 1, before any checkpoint: nothing of this run is kept "
                "(a run it was replacing is back in place); run the same command to start again"
            ) from None
        raise Interrupted(
            f"interrupted during epoch {loop.epoch + 1}: epochs 1-{loop.epoch} are saved in "
            f"{run_dir / LAST}; continue with the same command and --resume"
        ) from None
    return TrainResult(loop.history, loop.best[1], loop.best[0], run_dir / BEST)


class StopOnCtrlC:
    """Ctrl-C during training finishes the current step, then stops the run cleanly.

    Python raises KeyboardInterrupt wherever the main thread happens to be. Inside an import of a
    C extension (matplotlib's, on the first plot) or a module's class body that leaves the
    interpreter broken: an ImportError or RuntimeError instead of the interrupt, or an exit by
    SIGINT (-2) or abort at shutdown. So the first Ctrl-C only sets a flag, which the loop checks
    between steps (`check()` raises KeyboardInterrupt there); a second Ctrl-C interrupts at once.
    Outside the main thread, where signal handlers cannot be set, Python's default is left alone.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C interrupts at once

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Loop:
    """The state of one training run and the steps of an epoch."""

    def __init__(
        self, model, criterion, data: TrainData, cfg: TrainConfig, run_dir: Path, make_checkpoint
    ) -> None:
        self.model, self.criterion, self.data, self.cfg = model, criterion, data, cfg
        self.run_dir, self.make_checkpoint = run_dir, make_checkpoint
        self.device = resolve_device(cfg.device)
        model.to(self.device)
        self.net = distributed.replicate(model)  # what the loss calls: DDP under torchrun
        if isinstance(criterion, torch.nn.Module):
            criterion.to(self.device)  # a distillation loss carries its teacher along
        self.opt = torch.optim.Adam(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.gen = torch.Generator().manual_seed(cfg.seed)  # sampling + augmentation
        # --amp: fp16 autocast + loss scaling on CUDA; bf16 autocast (no scaling needed) on CPU
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=cfg.amp and self.device.type == "cuda"
        )
        self.history: list[EpochRecord] = []
        self.best = (math.inf, 0)
        self.best_key: tuple[float, ...] = (math.inf,)
        self.epoch = 0  # epochs finished
        if data.weights is not None:
            self.weights = data.weights.double()
        else:
            self.weights = class_balanced_weights(data.labels[data.train_idx])
        self.epoch_size = cfg.epoch_size or len(data.train_idx)
        self.world = distributed.world()
        full, short = divmod(self.epoch_size, cfg.batch_size)
        # a last, short batch is a step when every rank gets a row of it (alone: any row)
        self.steps = full + (short >= self.world.size)

    def restore(self) -> None:
        """Load `last.pt` (rank 0 reads it, every rank gets the same state); a damaged or
        foreign one (or one that would run code) is one line."""
        path = self.run_dir / LAST
        state = distributed.from_main(
            lambda: self._resumable(lambda: torch.load(path, map_location="cpu", weights_only=True))
        )
        self._resumable(lambda: self._restore(state))

    def _resumable(self, fn):
        try:
            return fn()
        except Exception as exc:
            why = "it would run code when loaded" if "Unsupported global" in str(exc) else (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120]}"
                if str(exc).strip() else type(exc).__name__
            )  # fmt: skip
            raise KwsError(
                f"{self.run_dir / LAST}: not a resumable kws state ({why}); start the run again "
                "with --force"
            ) from None

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.history = [EpochRecord(**r) for r in state["history"]]
        self.best = (state["best_au_fa_fr"], state["best_epoch"])
        self.best_key = tuple(state.get("best_key") or (1.0, state["best_au_fa_fr"], math.inf))
        self.epoch = state["epoch"]

    def learning_rate(self, epoch: int) -> float:
        """The rate for `epoch` (1-based): derived from the epoch alone, so resuming needs no
        scheduler state."""
        cfg = self.cfg
        if cfg.lr_schedule == "cosine":
            return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.num_epochs))
        return cfg.learning_rate

    def run_epoch(self, cb: Callbacks, stop: StopOnCtrlC) -> EpochRecord:
        epoch, cfg, data = self.epoch + 1, self.cfg, self.data
        lr = self.learning_rate(epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        self.net.train()
        distributed.reseed(cfg.seed, epoch)
        # the same draw on every rank (one generator, in step): each takes its share of a batch
        draw = torch.multinomial(self.weights, self.epoch_size, True, generator=self.gen)
        order = data.train_idx[draw]
        total, seen = 0.0, 0
        for step in range(self.steps):
            rows = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            loss = self.step(rows, epoch, step + 1)
            total += loss * distributed.kept(len(rows), self.world)
            seen += distributed.kept(len(rows), self.world)
            cb.on_step(epoch, step + 1, loss)
            stop.check()
        record = self.validate(epoch, total / seen, t0)
        record.lr = lr
        self.save(record)
        return record

    def step(self, rows: torch.Tensor, epoch: int, step: int) -> float:
        """One update on the global batch `rows`; returns its loss (the mean over the ranks)."""
        batch, y = self.data.features[rows], self.data.labels[rows]
        if self.data.augment is not None:
            # every rank augments the whole batch: one process's inputs, generators in step
            batch = self.data.augment(batch, self.data.energy[rows], self.gen)
        mine = distributed.share(len(rows), self.world)
        x, y = batch[mine].to(self.device), y[mine].to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.amp):
            loss = self.criterion(self.net, x, y)
        batch_loss = distributed.mean_across(loss)  # every rank stops at the same bad step
        if not torch.isfinite(batch_loss):
            kept = (
                f"the last good checkpoint (epoch {self.epoch}) is kept in {self.run_dir}"
                if self.epoch
                else f"no checkpoint was saved in {self.run_dir} (a run it was replacing is back "
                "in place)"
            )
            bad_input = not torch.isfinite(batch).all()
            raise KwsError(
                f"training diverged: loss is {batch_loss.item()} at epoch {epoch}, step {step}; "
                f"{kept} "
                + (
                    "(the batch itself held NaN/inf: check the data)"
                    if bad_input
                    else "(try a lower --lr)"
                )
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        return batch_loss.item()

    def validate(self, epoch: int, train_loss: float, t0: float) -> EpochRecord:
        d = self.data
        probs, val_loss = predict(self.model, d.features[d.val_idx], d.labels[d.val_idx])
        labels = d.labels[d.val_idx].numpy()
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_au_fa_fr=au_fa_fr(probs, labels),
            val_accuracy=accuracy(probs, labels),
            seconds=0.0,
            val_roc_auc=roc_auc(probs, labels) if 0 < labels.sum() < len(labels) else None,
        )
        if d.select_features is not None:
            p, _ = predict(self.model, d.select_features)
            y = d.select_labels.numpy()
            record.select_au_fa_fr = au_fa_fr(p, y)
            record.select_roc_auc = roc_auc(p, y)
            record.select_recall_1pct = recall_at_far(p, y, 0.01)
        record.seconds = time.perf_counter() - t0
        return record

    def save(self, record: EpochRecord) -> None:
        """Best checkpoint (if improved), then the resumable state, then the history: each
        written atomically, so a kill at any moment leaves a consistent set behind."""
        key = (1.0, record.val_au_fa_fr, math.inf)  # by validation
        if record.select_au_fa_fr is not None and (record.val_roc_auc or 0) >= SELECT_MIN_VAL_AUC:
            key = (0.0, record.select_au_fa_fr, record.val_au_fa_fr)  # by the selection set
        if key < self.best_key:
            self.best = (record.val_au_fa_fr, record.epoch)
            self.best_key = key
            record.best = True
            metrics = {
                "val_au_fa_fr": record.val_au_fa_fr,
                "val_accuracy": record.val_accuracy,
                "epoch": record.epoch,
            }
            if record.select_au_fa_fr is not None:
                metrics["select"] = {
                    "au_fa_fr": record.select_au_fa_fr,
                    "roc_auc": record.select_roc_auc,
                    "recall_at_1pct": record.select_recall_1pct,
                }
            if distributed.is_main():  # every rank chooses alike; rank 0 alone writes
                save_checkpoint(self.make_checkpoint(metrics), self.run_dir / BEST)
        self.history.append(record)
        if distributed.is_main():
            atomic_torch_save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "epoch": record.epoch,
                    "generator": self.gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(r) for r in self.history],
                    "best_au_fa_fr": self.best[0],
                    "best_epoch": self.best[1],
                    "best_key": list(self.best_key),
                },
                self.run_dir / LAST,
            )
            write_json(self.run_dir / HISTORY, [asdict(r) for r in self.history])
        self.epoch = record.epoch


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Sampling weights that draw each class equally often (the course's sampler)."""
    counts = torch.bincount(labels, minlength=2).clamp(min=1).double()
    return (1.0 / counts)[labels]
