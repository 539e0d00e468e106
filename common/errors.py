"""The one error type the command-line tools print as a one-line message (docs/design.md#layers).

Every error a user can act on (a name, a path, a data folder, an option, too few images) is a
`UserError`; the entry points print it as `error: ...` and exit with status 2. Any other exception
is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Base class of every error caused by user input (names, paths, data, options)."""


class InsufficientDataError(UserError, ValueError):
    """A metric or probe saw too little data to give a number (too few images, classes or samples)."""
