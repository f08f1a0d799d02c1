"""Errors a user can fix: they are reported in one line, never as a traceback."""


class PrunebenchError(Exception):
    """Base of every error caused by the user's input or environment."""


class ConfigError(PrunebenchError, ValueError):
    """A config value is out of its allowed range or names nothing that exists."""


class DataError(PrunebenchError):
    """Data files are missing, corrupt or in an unknown layout."""


class RunDiverged(PrunebenchError):
    """Training produced a non-finite loss; the run is recorded as diverged."""


class StorageError(PrunebenchError):
    """A folder a run writes to cannot take its files (read-only, full, over quota)."""


class RankStopped(Exception):
    """A rank of a data-parallel cell failed, so every rank stops (a crash: exit 3).

    Not a PrunebenchError: it is no one's bad input. `origin` is true on the rank that
    raised first, whose traceback is the one to read.
    """

    def __init__(self, message: str, origin: bool = False) -> None:
        super().__init__(message)
        self.origin = origin
