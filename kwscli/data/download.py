"""Download and unpack Google Speech Commands: resumable, size-checked, extracted atomically.

The archives are 1.5 and 2.4 GB, so an interrupted download resumes with an HTTP Range request
instead of starting over; the size is checked because a short tarball otherwise shows up much
later as a puzzling tarfile error; extraction goes into a temporary directory that is renamed
into place with a marker written last, so `<dest>/<name>/` is either complete or absent.
Stdlib only; nothing here prints (callers pass `progress`).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kwscli.errors import ConfigError, DataError, DownloadError

MARKER = ".kws_complete"  # written last; its presence means the dataset directory is complete
CHUNK = 1 << 20
MANUAL = "check your connection, or download the archive manually and pass --from-archive FILE"

Progress = Callable[[int, int | None], None]  # (done bytes, total bytes or None)


@dataclass(frozen=True)
class DatasetSource:
    """Where one Speech Commands release lives and what it weighs."""

    url: str
    size: int | None  # bytes of the .tar.gz; None = not checked
    clips: int  # utterance .wav files (not counting _background_noise_)

    @property
    def name(self) -> str:
        """Archive stem, also the dataset directory name: `speech_commands_v0.01`."""
        return self.url.rsplit("/", 1)[-1].removesuffix(".tar.gz")


# Sizes as served by download.tensorflow.org: v0.01 from a wget log ("Length: 1489096277"),
# v0.02 from espnet's egs2/speechcommands/asr1/local/data.sh (data_tar_size=2428923189).
DATASETS = {
    "v0.01": DatasetSource(
        url="http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        size=1_489_096_277,
        clips=64_727,
    ),
    "v0.02": DatasetSource(
        url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        size=2_428_923_189,
        clips=105_829,
    ),
}


@dataclass(frozen=True)
class DownloadResult:
    """What `download_dataset` did, for the CLI to report."""

    root: Path  # the dataset directory, holding <word>/*.wav and the split lists
    bytes_downloaded: int  # received over the network by this call
    resumed: bool  # continued a partial download left by an earlier call
    already_present: bool  # the dataset was complete; nothing was fetched or unpacked


def download_dataset(
    version: str,
    dest: Path,
    url: str | None = None,
    expected_size: int | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
    keep_archive: bool = False,
) -> DownloadResult:
    """Make `dest/<name>/` hold the Speech Commands `version`, fetching only what is missing.

    `url` points at a mirror (or a test server); `expected_size` overrides the registry size.
    A complete dataset returns at once without touching the network.
    """
    source = DATASETS[_check_version(version)]
    dest = Path(dest)
    root = dest / source.name
    if (root / MARKER).is_file():
        return DownloadResult(root, 0, resumed=False, already_present=True)
    _refuse_foreign(root)  # before a long download, not after it
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{source.name}.tar.gz"
    size = expected_size if expected_size is not None else source.size
    received, resumed = download_archive(url or source.url, archive, size, progress, timeout)
    extract_archive(archive, root, version=version)
    if not keep_archive:
        archive.unlink()
    return DownloadResult(root, received, resumed=resumed, already_present=False)


def download_archive(
    url: str,
    archive: Path,
    expected_size: int | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> tuple[int, bool]:
    """Fetch `url` to `archive` via `archive.part`; return (bytes received, resumed).

    The `.part` file is renamed only once its size is right, so a file named `.tar.gz` here is
    always whole. A short `.part` is kept (the next call resumes it); a wrong one is deleted.
    """
    archive = Path(archive)
    if archive.is_file():
        have = archive.stat().st_size
        if expected_size is None or have == expected_size:
            return 0, False
        raise DownloadError(
            f"{archive} has {have:,} bytes, expected {expected_size:,}: delete it and run again"
        )
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"cannot download {url!r}: expected an http:// or https:// URL")
    part = archive.with_name(archive.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()  # cannot be a prefix of the right file
        have = 0
    if have and have == expected_size:
        received, resumed, total = 0, True, expected_size
    else:
        received, resumed, total = _fetch(url, part, have, expected_size, progress, timeout)
    size = part.stat().st_size
    want = expected_size if expected_size is not None else total
    if want is not None and size < want:
        raise DownloadError(
            f"download of {url} stopped at {size:,} of {want:,} bytes: "
            "run the same command again to resume"
        )
    if want is not None and size > want:
        part.unlink()
        raise DownloadError(
            f"{url} sent {size:,} bytes, expected {want:,}; the file was deleted: {MANUAL}"
        )
    part.replace(archive)
    return received, resumed


def _fetch(
    url: str,
    part: Path,
    have: int,
    expected: int | None,
    progress: Progress | None,
    timeout: float,
) -> tuple[int, bool, int | None]:
    """One GET (with `Range` when `have` bytes exist); return (received, resumed, total)."""
    request = urllib.request.Request(url, headers={"User-Agent": "kws"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and have:  # our .part is at least as long as the server's file
            total = _content_range(err.headers.get("Content-Range"))[1]
            _check_total(total, expected, url, part)
            if total == have:
                return 0, True, total
            part.unlink()
            return _fetch(url, part, 0, expected, progress, timeout)
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}: {MANUAL}") from err
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {url} ({reason}): {MANUAL}") from err
    with response:
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                part.unlink()
                raise DownloadError(
                    f"{url} resumed at byte {first}, not {have}; the partial "
                    "file was deleted: run again to start over"
                )
            length = _int(response.headers.get("Content-Length"))
            if total is None and length is not None:
                total = have + length
            mode, resumed = "ab", True
        elif response.status == 200:  # a server that ignores Range sends everything again
            total = _int(response.headers.get("Content-Length"))
            have, mode, resumed = 0, "wb", False
        else:
            raise DownloadError(f"{url} answered HTTP {response.status}: {MANUAL}")
        _check_total(total, expected, url, part)
        total = expected if expected is not None else total
        received = 0
        if progress:
            progress(have, total)
        try:
            with part.open(mode) as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    if progress:
                        progress(have + received, total)
        except (OSError, http.client.HTTPException) as err:  # timeouts, resets, disk full
            raise DownloadError(
                f"download of {url} interrupted at {have + received:,} bytes "
                f"({err}): run the same command again to resume"
            ) from err
    return received, resumed, total


def _check_total(total: int | None, expected: int | None, url: str, part: Path) -> None:
    """Fail before reading the body when the server announces a file of the wrong size."""
    if total is not None and expected is not None and total != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} serves {total:,} bytes but {expected:,} were expected: "
            f"the server has a different file; {MANUAL}"
        )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes 10-99/100` or `bytes */100`; None where absent."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value.removeprefix("bytes ").partition("/")
    return _int(span.partition("-")[0]), _int(total)


def _int(value: str | None) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _check_version(version: str) -> str:
    if version not in DATASETS:
        raise ConfigError(f"--version {version!r}: expected one of {', '.join(DATASETS)}")
    return version


def install_archive(archive: Path, dest: Path, version: str) -> Path:
    """A tarball downloaded by hand, extracted where `download_dataset` would put `version`."""
    return extract_archive(archive, Path(dest) / DATASETS[_check_version(version)].name, version)


def extract_archive(archive: Path, dest: Path, version: str | None = None) -> Path:
    """Unpack a Speech Commands tarball so that `dest` becomes the dataset root; return `dest`.

    For archives downloaded by hand as well as by `download_dataset`. Members that would land
    outside `dest` (absolute paths, `..`, escaping links, devices) are refused before anything
    of theirs is written, and a failure leaves neither `dest` nor a temporary directory behind.
    """
    archive, dest = Path(archive), Path(dest)
    if (dest / MARKER).is_file():
        return dest
    if not archive.is_file():
        raise DataError(f"archive {archive} not found: expected a speech_commands_*.tar.gz file")
    _refuse_foreign(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        _unpack(archive, tmp)
        clips = sum(1 for p in tmp.rglob("*.wav") if "_background_noise_" not in p.parts)
        marker = {
            "version": version,
            "archive": archive.name,
            "archive_size": archive.stat().st_size,
            "clips": clips,
        }
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a dataset is meant to be shared
        if dest.exists():
            dest.rmdir()  # _refuse_foreign left only an empty directory here
        os.replace(tmp, dest)
    except BaseException:  # Ctrl-C included: never leave a half-dataset
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _refuse_foreign(root: Path) -> None:
    """Refuse to replace a directory with content that `kws` did not finish writing."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} exists but is not a complete download ({MARKER} missing): "
            "move it away or delete it, then run again"
        )


def _unpack(archive: Path, into: Path) -> None:
    """Extract every member into `into`, using tarfile's "data" filter where Python has it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _safe_members(tar, into, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:
                tar.extractall(into, members=members)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(
            f"cannot unpack {archive} ({str(err).splitlines()[0]}): the file is corrupt, "
            "truncated or unsafe; delete it and download it again"
        ) from err
    except OSError as err:
        raise DataError(f"cannot unpack {archive} into {into.parent}: {err}") from err


def _safe_members(tar: tarfile.TarFile, into: Path, archive: Path) -> Iterator[tarfile.TarInfo]:
    """Yield members that stay inside `into`; raise on the first one that does not.

    Checked even where the "data" filter exists, so every Python version refuses the same
    archives. Members are yielded one at a time as extraction proceeds, so links extracted
    earlier are taken into account when resolving later paths.
    """
    root = os.path.realpath(into)

    def inside(path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    for member in tar:
        name, why = member.name, None
        link = None  # where a link points: symlinks relative to their folder, hard links to root
        if member.issym():
            link = os.path.join(root, os.path.dirname(name), member.linkname)
        elif member.islnk():
            link = os.path.join(root, member.linkname)
        if member.isdev():  # character/block devices and FIFOs
            why = "is a device or FIFO"
        elif name.startswith(("/", "\\")) or ".." in PurePosixPath(name).parts:
            why = "has an absolute path or '..'"
        elif not inside(os.path.join(root, name)):
            why = "would be written outside the dataset directory"
        elif link and (member.linkname.startswith("/") or not inside(link)):
            why = f"links outside the dataset directory ({member.linkname})"
        if why:
            raise DataError(
                f"refusing to unpack {archive}: member {name!r} {why}; "
                "it is not a clean Speech Commands archive"
            )
        member.mode &= 0o755  # no setuid/setgid or world-writable files, as the data filter
        yield member
