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
            if _write_failure(exc):
                raise self._failed(exc) from None
            return
        try:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp's 0600 hides it from other users
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.tmp.unlink(missing_ok=True)
            raise self._failed(err) from None

    def _failed(self, exc: BaseException):
        from kwscli.errors import KwsError

        kept = "the earlier file is unchanged" if self.path.exists() else "nothing was written"
        return KwsError(f"{self.path}: could not be written ({_reason(exc)}); {kept}")


def _write_failure(exc: BaseException) -> bool:
    """A full disk, a file-size limit, a permission or I/O error — however the writer (torch,
    libsndfile, Python) words it."""
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("no space", "file too large", "unexpected pos", "system error"))


def _reason(exc: BaseException) -> str:
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "larger than the file-size limit"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if "unexpected pos" in str(exc) or "system error" in str(exc).lower():
        return "the write stopped part-way: disk full or a file-size limit?"
    return str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__


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


def check_output(out: Path, force: bool, inputs=(), flag: str = "--out") -> None:
    """Refuse, before any work, to overwrite without --force, to write onto an input of the same
    command (even with --force: it would be the only copy), or to write where we cannot."""
    from kwscli.errors import KwsError as _err

    out = Path(out)
    if out.is_dir():
        raise _err(f"{out}: is a folder; give a file name with {flag}")
    not_an_input(out, inputs, flag)
    if out.exists() and not force:
        raise _err(f"{out} already exists; use --force to replace it or {flag} for a new file")
    parent = out.parent
    if not parent.is_dir():
        raise _err(f"{parent}: no such folder for the output")
    if not os.access(parent, os.W_OK):
        raise _err(f"{parent}: not writable; choose another place with --out")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_plot(out: Path, inputs=(), flag: str = "--plot") -> Path:
    """A plot path: a .png name (kws writes PNG), never an input of the command, and never over
    an existing file that is not a PNG (a model, a config, notes): refused before any work."""
    from kwscli.errors import KwsError
    from kwscli.extras import check

    out = Path(out)
    check("matplotlib")
    if out.suffix.lower() != ".png":
        raise KwsError(f"{flag} {out}: plots are PNG images; give a file name ending in .png")
    not_an_input(out, inputs, flag)
    if out.is_dir():
        raise KwsError(f"{flag} {out}: is a folder; give a file name ending in .png")
    if out.exists():
        with open(out, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                raise KwsError(
                    f"{flag} {out}: that file exists and is not a PNG image; kws will not "
                    "replace it: choose another name"
                )
    ensure_folder(out.parent)
    return out


def not_an_input(out: Path, inputs, flag: str) -> None:
    """Refuse `out` when it is one of `inputs` (the same file by path or by link)."""
    from kwscli.errors import KwsError

    for item in inputs:
        if item is not None and same_file(out, Path(item)):
            raise KwsError(
                f"{flag} {out} is an input of this command; writing there would lose it: "
                "choose another name"
            )


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def unique_stems(paths) -> list[str]:
    """A name per input for the files made from it (trigger clips, trace plots): its stem, with
    -2, -3… when two inputs share one (a/take.wav, b/take.wav), so neither overwrites the other."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = "stdin" if str(p) == "-" else Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def trace_plot_paths(out: Path, inputs) -> list[Path]:
    """`kws detect --plot OUT`: OUT for one input, OUT-<name>.png for each of several."""
    out = Path(out)
    if len(inputs) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{stem}.png") for stem in unique_stems(inputs)]


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists (one we may not signal counts as alive)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
