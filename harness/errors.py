"""Backbone errors a user can act on; the entry points print them as one line (common.errors)."""

from common.errors import UserError


class UnknownBackboneError(UserError, ValueError):
    """A backbone name that is neither a known name, an HF id, a local folder nor a checkpoint."""


class BackboneUnavailableError(UserError, OSError):
    """Weights that exist in principle but cannot be reached (hub offline, nothing cached)."""


class CheckpointFormatError(UserError, ValueError):
    """Weights that do not fit their model: a `.pth` file that is not an original DINOv2 checkpoint
    this package can convert, or a folder whose tensors are missing, extra, misnamed or misshapen
    (loading it would leave part of the model at random initialisation)."""


def state_dict_problem(error: BaseException, limit: int = 300) -> str:
    """What torch's `load_state_dict` error says is wrong (its lines after the header, e.g. `Missing
    key(s) in state_dict: ...`), in one line of at most `limit` characters.

    >>> error = RuntimeError('Error(s) in loading state_dict for M:\\n\\tMissing key(s) in state_dict: "a".')
    >>> state_dict_problem(error)
    'Missing key(s) in state_dict: "a".'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = " ".join(line for line in lines if not line.startswith("Error(s) in loading")) or first_line(
        error
    )
    return details if len(details) <= limit else details[: limit - 3] + "..."


def first_line(error: BaseException) -> str:
    """An exception's message in one line (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
