"""User-facing errors.

Anything a user can fix (bad data, wrong flag, mismatched artifact) is raised as
:class:`PTuningError`; the CLI prints its one-line message and exits non-zero
without a traceback. Programming errors stay ordinary exceptions.
"""


class PTuningError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class DataError(PTuningError):
    """A data file is missing, malformed or inconsistent with the task."""

    def __init__(self, message: str, path: object | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class InputError(PTuningError):
    """A prediction input does not have the shape its task reads."""
