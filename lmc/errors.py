"""The base of every error caused by the user's input rather than by a bug.

``lmc`` prints such an error as one line and exits with code 2; any other exception keeps
its traceback, because it is ours to fix.
"""


class UserError(ValueError):
    """Bad input: the message names the bad value, what was expected and what to do."""


class UsageError(UserError):
    """Bad input detected after parsing (a command-line value, a missing file): one line, exit 2."""
