"""The one error type of the analysis commands: bad input, reported in one line."""

from benchmarks.errors import PrunebenchError


class AnalysisError(PrunebenchError):
    """A source, file or option the analysis cannot use, with what would work instead."""
