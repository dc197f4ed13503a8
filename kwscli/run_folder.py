"""A run's folder: created and checked before work, one run at a time (a lock), resumed only
with the same settings, an earlier run replaced only with --force — and only once the new run has
saved its first checkpoint: until then the old files wait in `.replaced/` and come back if the new
run fails, is interrupted, or is killed (restored at the next start). A start that never saved a
checkpoint leaves nothing behind: not its files, not a folder it created."""

from __future__ import annotations

import shutil
from pathlib import Path

from kwscli import engine
from kwscli.config import RunConfig
from kwscli.errors import ConfigError, KwsError
from kwscli.files import atomic_write, process_alive

RUN_FILES = ("model.pt", "last.pt", "history.json", "config.yaml", "curves.png", "metrics.json")
CHECKPOINTS = (engine.BEST, engine.LAST)  # a folder holds a run once one of these is saved
ASIDE = ".replaced"


def open_run_dir(cfg: RunConfig, resume: bool) -> tuple[Path, list[Path]]:
    """The run folder, created and checked writable before any work starts, and the folders
    this call created (to remove again if the run saves nothing)."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    if resume and not (run_dir / engine.LAST).is_file():
        raise KwsError(f"{run_dir}: nothing to resume (no {engine.LAST}); drop --resume")
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise KwsError(f"{run_dir}: cannot write there ({exc.strerror})") from None
    return run_dir, created


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a start created (deepest first), where it left them empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (a run saved something), or already gone


def saved_a_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / f).is_file() for f in CHECKPOINTS)


RESUMABLE_CHANGES = ("name", "runs_dir", "train.num_epochs", "train.device")


def changed_settings(cfg: RunConfig, run_dir: Path) -> list[str] | None:
    """The settings (`train.seed`, ...) in which `cfg` differs from the run saved in `run_dir`;
    None when it saved no settings (killed before writing them)."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return differences(saved, cfg.model_dump(mode="json"))


def check_resume_settings(cfg: RunConfig, run_dir: Path) -> None:
    """--resume continues the same run: only the epoch count and the device may change."""
    changed = [k for k in changed_settings(cfg, run_dir) or [] if k not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"--resume with settings that differ from the run in {run_dir}: {', '.join(changed)} "
            "(only the number of epochs and the device may change; use --name for a new run)"
        )


def differences(a, b, prefix: str = "") -> list[str]:
    """The dotted keys (`train.seed`) where two nested settings dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def previous_run(run_dir: Path, force: bool) -> list[Path]:
    """The files of an earlier run here: refused unless --force, and then returned so they can
    be set aside once the new run is known to start (held under the run lock). Files of a start
    that never saved a checkpoint are no run: they are removed, and the command goes ahead."""
    existing = [run_dir / f for f in RUN_FILES if (run_dir / f).exists()]
    if not saved_a_checkpoint(run_dir):
        for f in existing:
            f.unlink(missing_ok=True)
        return []
    if existing and not force:
        raise KwsError(
            f"{run_dir} already holds a run ({', '.join(f.name for f in existing)}); use --resume "
            "to continue it, --force to replace it, or --name for a new one"
        )
    return existing


class run_lock:
    """`with run_lock(run_dir):` one training run per folder at a time. The lock file names the
    process holding it; a lock left by a process that no longer exists is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"

    def __enter__(self) -> run_lock:
        import os

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.path)
                if holder is not None and process_alive(holder):
                    raise KwsError(
                        f"{self.path.parent} is in use by another kws run (pid {holder}); wait "
                        "for it to finish or pick another --name"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise KwsError(f"{self.path}: could not take the run lock; remove it if no run is active")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    import yaml

    with atomic_write(run_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def set_aside(run_dir: Path, files: list[Path]) -> Path | None:
    """Move an earlier run's files into RUN/.replaced/ until the new run saves a checkpoint."""
    if not files:
        return None
    aside = run_dir / ASIDE
    aside.mkdir(exist_ok=True)
    for f in files:
        f.replace(aside / f.name)
    return aside


def settle(run_dir: Path, aside: Path | None) -> None:
    """After a run ends, however it ends: if it saved a checkpoint the old run is gone for good;
    if not, its own files go and the old run's come back."""
    if saved_a_checkpoint(run_dir):
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        return
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if aside is not None:
        for f in aside.iterdir():
            f.replace(run_dir / f.name)
        aside.rmdir()


def recover_aside(run_dir: Path) -> None:
    """A run killed (SIGKILL, power loss) while an old run waited aside: settle it now."""
    aside = run_dir / ASIDE
    if aside.is_dir():
        settle(run_dir, aside)
