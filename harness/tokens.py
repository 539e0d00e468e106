"""Token bookkeeping: where [CLS], distillation, register and patch tokens sit in a ViT sequence.

This is the only place in the package that knows token positions; everything else asks a
`TokenLayout` for a slice by group name.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS: tuple[str, ...] = ("cls", "distillation", "register", "patch")
"""Token groups in sequence order: [CLS], the distillation token (distilled DeiT), registers, patches."""


def present_groups(num_registers: int, num_distillation: int = 0, num_cls: int = 1) -> tuple[str, ...]:
    """The token groups a model has, in `GROUPS` order (no register or distillation group without
    such tokens, no [CLS] group for a model pooled without one: SigLIP).

    >>> present_groups(0), present_groups(4, 1), present_groups(0, num_cls=0)
    (('cls', 'patch'), ('cls', 'distillation', 'register', 'patch'), ('patch',))
    """
    empty = {"register"} if num_registers == 0 else set()
    empty |= {"distillation"} if num_distillation == 0 else set()
    empty |= {"cls"} if num_cls == 0 else set()
    return tuple(group for group in GROUPS if group not in empty)


def split_groups(num_distillation: int = 0) -> tuple[str, ...]:
    """The groups the attention split reports: [CLS], registers and patches for every model (the
    register share is 0 without registers, as the paper reports it), the distillation token where
    there is one."""
    return tuple(group for group in GROUPS if group != "distillation" or num_distillation > 0)


@dataclass(frozen=True)
class TokenLayout:
    """Positions of the token groups for one input size.

    Args:
        num_registers: register tokens after [CLS] (0 for models without registers).
        grid_height: patch rows, image height // patch size.
        grid_width: patch columns, image width // patch size.
        num_distillation: distillation tokens right after [CLS] (1 for a distilled DeiT, else 0).
        num_cls: 1, or 0 for a model without a [CLS] token (SigLIP, AIMv2: pooled by attention),
            whose sequence starts with its registers or patches.

    >>> layout = TokenLayout(num_registers=4, grid_height=16, grid_width=16)
    >>> layout.num_tokens, layout.slice("register"), layout.slice("patch")
    (261, slice(1, 5, None), slice(5, 261, None))
    """

    num_registers: int
    grid_height: int
    grid_width: int
    num_distillation: int = 0
    num_cls: int = 1

    def __post_init__(self) -> None:
        if min(self.num_registers, self.num_distillation) < 0 or self.grid_height < 1 or self.grid_width < 1:
            raise ValueError(f"invalid token layout: {self}")
        if self.num_cls not in (0, 1) or (self.num_cls == 0 and self.num_distillation):
            raise ValueError(f"invalid token layout: {self}")

    @classmethod
    def for_image(
        cls, height: int, width: int, patch_size: int, num_registers: int, num_distillation: int = 0,
        num_cls: int = 1,
    ) -> TokenLayout:  # fmt: skip
        """Layout of an image of `height` x `width` pixels cut into `patch_size` patches."""
        return cls(num_registers, height // patch_size, width // patch_size, num_distillation, num_cls)

    @property
    def num_patches(self) -> int:
        return self.grid_height * self.grid_width

    @property
    def num_prefix(self) -> int:
        """Tokens before the patches: [CLS], distillation, registers."""
        return self.num_cls + self.num_distillation + self.num_registers

    @property
    def num_tokens(self) -> int:
        """[CLS] + distillation + registers + patches."""
        return self.num_prefix + self.num_patches

    @property
    def groups(self) -> tuple[str, ...]:
        """The non-empty groups, in sequence order."""
        return present_groups(self.num_registers, self.num_distillation, self.num_cls)

    def group_at(self, position: int) -> str:
        """The group of the token at sequence `position`.

        >>> TokenLayout(num_registers=2, grid_height=2, grid_width=2).group_at(2)
        'register'
        """
        for group in GROUPS:
            span = self.slice(group)
            if span.start <= position < span.stop:
                return group
        raise ValueError(f"position {position} is outside the {self.num_tokens} tokens of {self}")

    def patch_cell(self, position: int) -> tuple[int, int]:
        """(row, column) in the patch grid of the patch token at sequence `position`.

        >>> TokenLayout(num_registers=1, grid_height=3, grid_width=4).patch_cell(2 + 5)
        (1, 1)
        """
        if self.group_at(position) != "patch":
            raise ValueError(f"position {position} is not a patch token of {self}")
        row, column = divmod(position - self.num_prefix, self.grid_width)
        return row, column

    def slice(self, group: str) -> slice:
        """Sequence positions of `group` (one of `GROUPS`; empty for a group the model lacks)."""
        registers_start = self.num_cls + self.num_distillation
        if group == "cls":
            return slice(0, self.num_cls)
        if group == "distillation":
            return slice(self.num_cls, registers_start)
        if group == "register":
            return slice(registers_start, self.num_prefix)
        if group == "patch":
            return slice(self.num_prefix, self.num_tokens)
        raise ValueError(f"unknown token group {group!r}; expected one of {GROUPS}")
