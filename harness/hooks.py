"""Forward hooks that live for one pass (registered, then removed however the pass ends): the
pieces every recorder of this package is made of."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

if TYPE_CHECKING:
    from harness.backbone import DecomposingBackbone
    from harness.tokens import TokenLayout


def keeping(store: MutableMapping[Any, Tensor], key: Any) -> Callable[..., None]:
    """A hook that keeps its module's output (as a forward hook) or first input (as a pre-hook) in
    `store` under `key`."""

    def keep(module: nn.Module, inputs: Any, *output: Any) -> None:
        store[key] = output[0] if output else inputs[0]

    return keep


@contextlib.contextmanager
def removed_after(handles: Sequence[RemovableHandle]) -> Iterator[None]:
    """The hooks of `handles` for the length of the block, removed however it ends."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


OnBlockEnd = Callable[[Tensor, Tensor, Tensor, Tensor], "Tensor | None"]
"""Called when a tapped block ends with its input, keys (as its softmax sees them), values and output;
returns the output to use instead, or None to keep it."""


@contextlib.contextmanager
def tapped(
    backbone: DecomposingBackbone, numbers: Iterable[int], layout: TokenLayout,
    on_end_for: Callable[[int], OnBlockEnd],
) -> Iterator[None]:  # fmt: skip
    """Hooks on blocks `numbers` (1-based) for one pass: each block's input, keys and values are kept
    while it runs and handed to `on_end_for(number)` when it ends (then dropped: no two blocks' are
    held at once)."""
    handles = []
    for number in numbers:
        block, view = backbone.family.blocks[number - 1], backbone.view(number)
        kept: dict[str, Tensor] = {}
        handles += [
            block.register_forward_pre_hook(keeping(kept, "input")),
            view.attention.k_proj.register_forward_hook(keeping(kept, "keys")),
            view.attention.v_proj.register_forward_hook(keeping(kept, "values")),
            block.register_forward_hook(_ending(backbone, layout, kept, on_end_for(number))),
        ]
    with removed_after(handles):
        yield


def _ending(
    backbone: DecomposingBackbone, layout: TokenLayout, kept: dict[str, Tensor], on_end: OnBlockEnd
) -> Callable[..., Tensor | None]:
    """The forward hook at a tapped block's end: its kept parts (keys as the softmax sees them) to
    `on_end`, and dropped."""

    def end(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        keys = backbone.family.attention_keys(kept.pop("keys"), layout)
        return on_end(kept.pop("input"), keys, kept.pop("values"), output)

    return end
