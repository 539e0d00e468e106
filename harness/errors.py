"""Backbone errors a user can act on; the entry points print them as one line (cls_decoupling.errors)."""

from cls_decoupling.errors import UserError


class UnknownBackboneError(UserError, ValueError):
    """A backbone name that is neither a known name, an HF id, a local folder nor a checkpoint."""


class BackboneUnavailableError(UserError, OSError):
    """Weights that exist in principle but cannot be reached (hub offline, nothing cached)."""


class CheckpointFormatError(UserError, ValueError):
    """A `.pth` file that is not an original DINOv2 checkpoint this package can convert."""
