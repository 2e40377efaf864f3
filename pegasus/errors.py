"""The errors caused by the user's input, not by a bug. This module imports nothing of pegasus,
so every other module can raise these without an import cycle.

The CLI prints them as a single line and exits with code 2; anything else is a bug and keeps
its traceback. Messages speak of the library (fields, values, files), never of CLI flags: a
`FieldError` names the field it is about, and the CLI shows the flag that sets that field.
"""

from __future__ import annotations


class PegasusWarning(UserWarning):
    """Something the user should know that does not stop the work (a cache left unwritten);
    the CLI prints it as one line, as its own warnings."""


class UserError(ValueError):
    """Bad input: the message says what is wrong and how to fix it. `shared`: every rank of a
    process group raised it alike (distributed.py), so rank 0 alone need say it."""

    def __init__(self, *args, shared: bool = False) -> None:
        super().__init__(*args)
        self.shared = shared


class FieldError(UserError):
    """A bad value of one named field: str() is "<field> <problem>"."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


class ConfigError(UserError):
    """A config that cannot be used, with the field and the fix in its message."""


class RegistryError(UserError):
    """A backbone that does not exist, conflicts, or cannot be built as asked."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, damaged, foreign or of an unknown format."""


class RunError(UserError):
    """A run folder that cannot be used as asked."""


class DatasetError(UserError):
    """A dataset that cannot be loaded as asked; the message says what to change."""


class SamplingError(UserError):
    """A chain whose images are not finite numbers: nothing is written of them."""


class WriteError(UserError):
    """An output that cannot be written (a missing permission, a full disk, a bad name)."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of another library's error (its type's name when it says
    nothing), to quote inside one of pegasus's one-line messages."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__)
