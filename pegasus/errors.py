"""The one base class for errors caused by the user's input, not by a bug.

The CLI prints these as a single line and exits with code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""
