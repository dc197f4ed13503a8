"""The only exceptions the CLI turns into exit codes.

The core raises these with a message that says what was wrong and what to do; `kwscli/cli/` prints
the message as one red line and exits non-zero (a traceback only with `--debug`).
"""

from __future__ import annotations


class KwsError(Exception):
    """A user-facing error: the message is the whole story."""

    exit_code = 1


class ConfigError(KwsError):
    """Settings that fail validation (exit 2, like a usage error)."""

    exit_code = 2


class DataError(KwsError):
    """A dataset, audio file or folder that cannot be used."""


class AudioError(DataError):
    """One audio file that cannot be read (empty, corrupt, not audio)."""


class CheckpointError(KwsError):
    """A file that is not a usable kws checkpoint."""


class DownloadError(KwsError):
    """A download that failed or gave the wrong bytes."""


class Interrupted(KwsError):
    """Ctrl-C: the work saved so far is intact and the message says how to continue."""

    exit_code = 130
