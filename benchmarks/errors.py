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
