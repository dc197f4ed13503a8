"""Training past one process: torchrun's environment, the process group, and the few collectives
train.py and engine.py need.

Under `torchrun` every process runs the same `kws teacher`/`kws distill`. Rank 0 owns the run
folder (its lock, checkpoints, history, metrics) and the feature cache, and alone prints; the
other ranks wait for it to check the folder and build the cache, read that cache, and train
alongside it writing nothing. Every rank draws the same global batch of `batch_size` clips (one
generator, seeded alike) and augments all of it, then trains on its own equal share; DDP averages
the gradients, so each update is the one a single process makes on the whole batch.

A process that torchrun did not start never touches torch.distributed. Nothing here imports
torch at module level: the CLI asks `world()` and `is_main()` on its error path, which must stay
free of torch (`kws detect` runs without it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kwscli.errors import ConfigError, KwsError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_group: dict[str, Any] = {}  # the process group this module set up: its collectives' device


class RankError(KwsError):
    """An error only this rank met (its machine's dataset, say): printed by the rank itself,
    since rank 0 cannot know it."""


class MainFailed(KwsError):
    """Rank 0's error, raised on the other ranks too so they stop with its exit code; rank 0
    prints it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class World:
    """Where this process stands among the processes of one training run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # its index on its own machine: which GPU it takes
    local_size: int = 1  # processes on its machine
    launched: bool = False  # started by torchrun (even as its only process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from the environment torchrun sets (alone without it)."""
    env = os.environ
    if not all(k in env for k in TORCHRUN_ENV):
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        return World(
            int(env["RANK"]),
            size,
            int(env["LOCAL_RANK"]),
            int(env.get("LOCAL_WORLD_SIZE", size)),
            launched=True,
        )
    except ValueError:
        raise ConfigError(
            "RANK/WORLD_SIZE/LOCAL_RANK are not whole numbers: start kws with torchrun, or "
            "unset them"
        ) from None


def is_main() -> bool:
    """Whether this process reports and writes: rank 0, or a process on its own."""
    return world().is_main


def active() -> bool:
    """Whether this process trains in a process group this module set up."""
    return bool(_group)


# ---------------------------------------------------------------- the process group


@contextmanager
def session(device: torch.device, batch_size: int) -> Iterator[World]:
    """`with session(device, batch_size) as w:` the process group of a torchrun run (gloo on the
    CPU, nccl on CUDA), torn down at the end; nothing at all for a process on its own.
    `batch_size` is the global batch: each rank takes batch_size / world size."""
    w = world()
    if not w.launched:
        yield w
        return
    if batch_size % w.size:
        raise ConfigError(
            f"train.batch_size={batch_size}: under torchrun it is the global batch, split "
            f"equally over the {w.size} processes; use a multiple of {w.size}"
        )
    import torch
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's own group: used, left as it is
        _group["device"] = device if device.type == "cuda" else torch.device("cpu")
        try:
            yield w
        finally:
            _group.clear()
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _group["device"] = device if device.type == "cuda" else torch.device("cpu")
    try:
        yield w
    finally:
        _group.clear()
        dist.destroy_process_group()


def place(device: torch.device) -> torch.device:
    """The device this process trains on: under torchrun a CUDA device is the GPU of its local
    rank (one GPU per process), whatever index was asked for."""
    w = world()
    if not w.launched or device.type != "cuda":
        return device
    import torch

    gpus = torch.cuda.device_count()
    if w.local_size > gpus:
        raise ConfigError(
            f"{w.local_size} processes on this machine but {gpus} GPU(s): torchrun starts one "
            f"process per GPU; use --nproc_per_node={gpus} (or --device cpu)"
        )
    return torch.device("cuda", w.local_rank)


def barrier() -> None:
    if active():
        import torch.distributed as dist

        device = _group["device"]
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def _broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled: small things only)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_group["device"])
    return box[0]


def _failure(exc: BaseException) -> tuple:
    if isinstance(exc, KwsError):
        return ("error", str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return ("error", "interrupted", 130)
    return ("error", f"rank 0 failed: {type(exc).__name__}: {exc}", 1)


def _unwrap(payload: tuple) -> Any:
    if payload[0] == "error":
        raise MainFailed(payload[1], payload[2])
    return payload[1]


def from_main(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 and its result given to every rank (a resumable state, say); its
    error is raised on every rank instead, so none waits for what will never come."""
    if not active():
        return fn()
    if is_main():
        try:
            value = fn()
        except BaseException as exc:
            _broadcast(_failure(exc))
            raise
        _broadcast(("ok", value))
        return value
    return _unwrap(_broadcast(None))


@contextmanager
def leading() -> Iterator[Callable[[Any], None]]:
    """Rank 0: `with leading() as release: ...; release(value)`. The other ranks wait in
    `follow` until `release`; an error before it is given to them instead. `release` returns
    once every other machine's first process has run its `follow` step (its feature cache)."""
    released = False

    def release(value: Any = None) -> None:
        nonlocal released
        if active():
            _broadcast(("ok", value))
            released = True
            barrier()

    try:
        yield release
    except BaseException as exc:
        if active() and not released:
            _broadcast(_failure(exc))
        raise


def follow(then: Callable[[Any], T]) -> T:
    """A rank other than 0: wait for rank 0's `release(value)` (or raise its error), then
    `then(value)` on the first process of each machine before the others, so what it caches on
    disk is built once per machine (once in all on a shared disk) and read by the rest."""
    value = _unwrap(_broadcast(None))
    w = world()
    result = _own_errors(then, value) if w.local_rank == 0 else None
    barrier()
    return result if w.local_rank == 0 else _own_errors(then, value)


def _own_errors(then: Callable[[Any], T], value: Any) -> T:
    try:
        return then(value)
    except KwsError as exc:
        err = RankError(str(exc))
        err.exit_code = exc.exit_code
        raise err from None


# ---------------------------------------------------------------- the batch and the model


def share(n: int, w: World | None = None) -> slice:
    """This rank's rows of a global batch of `n`: equal contiguous shares of n // size, so
    DDP's mean of the ranks' gradients is the gradient of the mean over the kept rows. A short
    last batch drops its last n % size rows (fewer than the processes)."""
    w = w or world()
    each = n // w.size
    return slice(w.rank * each, (w.rank + 1) * each)


def kept(n: int, w: World | None = None) -> int:
    """Rows of a global batch of `n` that some rank trains on."""
    w = w or world()
    return n - n % w.size


def mean_across(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the ranks (the value itself alone)."""
    if not active():
        return value
    import torch.distributed as dist

    total = value.detach().float().clone()
    dist.all_reduce(total)
    return total / world().size


def reseed(seed: int, epoch: int) -> None:
    """Ranks other than 0 draw dropout from their own stream, reseeded every epoch, so a resumed
    run repeats an uninterrupted one (rank 0's stream is the one saved in last.pt)."""
    w = world()
    if active() and w.rank:
        import torch

        torch.manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + w.rank)


def replicate(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the loss sees it under torchrun: `model(x)` and `model.outputs(x)` (the
    logits, attention and embedding distillation compares) both run through DDP, which averages
    the gradients over the ranks in backward. The model itself alone."""
    if not active():
        return model
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    device = _group["device"]

    class AllOutputs(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.outputs(x) if hasattr(self.inner, "outputs") else (self.inner(x),)

    class Replica(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ddp = DistributedDataParallel(
                AllOutputs(model), device_ids=[device.index] if device.type == "cuda" else None
            )

        def forward(self, x):
            return self.ddp(x)[0]

        def outputs(self, x):
            return self.ddp(x)

    return Replica()
