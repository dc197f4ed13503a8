"""Crash-safe writes: every file kws produces appears whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class atomic_write:
    """`with atomic_write(path) as tmp:` write to `tmp`; on success it is fsynced and renamed
    over `path`, on failure removed. Readers see the old file or the new one, never half of one."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        ensure_folder(self.path.parent)
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from other users
        os.replace(self.tmp, self.path)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` (and parents) or fail with one line saying why."""
    from kwscli.errors import KwsError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise KwsError(f"{folder}: a file is in the way of this output folder") from None
    except OSError as exc:
        raise KwsError(f"{folder}: cannot create this output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise KwsError(f"{folder}: not writable; choose another place")
    return folder


def check_output(out: Path, force: bool) -> None:
    """Refuse, before any work, to overwrite without --force or to write where we cannot."""
    from kwscli.errors import KwsError as _err

    if out.is_dir():
        raise _err(f"{out}: is a folder; give a file name with --out")
    if out.exists() and not force:
        raise _err(f"{out} already exists; use --force to replace it or --out for a new file")
    parent = out.parent
    if not parent.is_dir():
        raise _err(f"{parent}: no such folder for the output")
    if not os.access(parent, os.W_OK):
        raise _err(f"{parent}: not writable; choose another place with --out")
