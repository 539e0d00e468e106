"""Token bookkeeping: where [CLS], register and patch tokens sit in a DINOv2 sequence.

This is the only place in the package that knows token positions; everything else asks a
`TokenLayout` for a slice by group name.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS: tuple[str, ...] = ("cls", "register", "patch")
"""Token groups in sequence order (HF / DINOv2 order: [CLS], registers, patches)."""


@dataclass(frozen=True)
class TokenLayout:
    """Positions of the token groups for one input size.

    Args:
        num_registers: register tokens after [CLS] (0 for models without registers).
        grid_height: patch rows, image height // patch size.
        grid_width: patch columns, image width // patch size.

    >>> layout = TokenLayout(num_registers=4, grid_height=16, grid_width=16)
    >>> layout.num_tokens, layout.slice("register"), layout.slice("patch")
    (261, slice(1, 5, None), slice(5, 261, None))
    """

    num_registers: int
    grid_height: int
    grid_width: int

    def __post_init__(self) -> None:
        if self.num_registers < 0 or self.grid_height < 1 or self.grid_width < 1:
            raise ValueError(f"invalid token layout: {self}")

    @classmethod
    def for_image(cls, height: int, width: int, patch_size: int, num_registers: int) -> TokenLayout:
        """Layout of an image of `height` x `width` pixels cut into `patch_size` patches."""
        return cls(num_registers, height // patch_size, width // patch_size)

    @property
    def num_patches(self) -> int:
        return self.grid_height * self.grid_width

    @property
    def num_tokens(self) -> int:
        """1 [CLS] + registers + patches."""
        return 1 + self.num_registers + self.num_patches

    def slice(self, group: str) -> slice:
        """Sequence positions of `group` ("cls", "register" or "patch")."""
        if group == "cls":
            return slice(0, 1)
        if group == "register":
            return slice(1, 1 + self.num_registers)
        if group == "patch":
            return slice(1 + self.num_registers, self.num_tokens)
        raise ValueError(f"unknown token group {group!r}; expected one of {GROUPS}")
