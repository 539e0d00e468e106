"""Errors a user can act on; entry scripts print them as one line, without a traceback."""


class HarnessError(Exception):
    """Base class of every error caused by user input (names, paths, data, options)."""


class UnknownBackboneError(HarnessError, ValueError):
    """A backbone name that is neither a known name, an HF id, a local folder nor a checkpoint."""


class BackboneUnavailableError(HarnessError, OSError):
    """Weights that exist in principle but cannot be reached (hub offline, nothing cached)."""


class CheckpointFormatError(HarnessError, ValueError):
    """A `.pth` file that is not an original DINOv2 checkpoint this package can convert."""
