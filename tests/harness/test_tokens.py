from itertools import pairwise

import pytest

from harness.tokens import TokenLayout


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "registers"])
def test_groups_tile_the_sequence(registers: int) -> None:
    layout = TokenLayout.for_image(224, 280, patch_size=14, num_registers=registers)
    spans = [layout.slice(g) for g in ("cls", "distillation", "register", "patch")]
    assert spans[0].start == 0 and spans[-1].stop == layout.num_tokens
    assert all(a.stop == b.start for a, b in pairwise(spans))
    assert layout.num_tokens == 1 + registers + 16 * 20


def test_unknown_group_and_bad_layout() -> None:
    with pytest.raises(ValueError, match="unknown token group 'patches'"):
        TokenLayout(0, 2, 2).slice("patches")
    with pytest.raises(ValueError, match="invalid token layout"):
        TokenLayout(-1, 2, 2)


def test_the_distillation_token_sits_between_cls_and_registers() -> None:
    layout = TokenLayout(num_registers=2, grid_height=3, grid_width=4, num_distillation=1)
    assert [layout.slice(g) for g in layout.groups] == [slice(0, 1), slice(1, 2), slice(2, 4), slice(4, 16)]
    assert layout.num_tokens == 16 and layout.groups == ("cls", "distillation", "register", "patch")
    plain = TokenLayout(0, 2, 2)
    assert plain.groups == ("cls", "patch") and plain.slice("distillation") == slice(1, 1)


@pytest.mark.parametrize(
    ("registers", "distillation"), [(0, 0), (4, 0), (2, 1)], ids=["plain", "registers", "distilled"]
)
def test_positions_name_their_group_and_patch_cell(registers: int, distillation: int) -> None:
    """`group_at` and `patch_cell` against a sequence laid out by hand: [CLS], distillation, registers,
    then the patch grid row by row."""
    layout = TokenLayout(registers, 3, 5, distillation)
    expected = ["cls"] + ["distillation"] * distillation + ["register"] * registers + ["patch"] * 15
    assert [layout.group_at(position) for position in range(layout.num_tokens)] == expected
    grid = [(row, column) for row in range(3) for column in range(5)]
    first_patch = 1 + distillation + registers
    assert [layout.patch_cell(first_patch + i) for i in range(15)] == grid
    with pytest.raises(ValueError, match="outside"):
        layout.group_at(layout.num_tokens)
    with pytest.raises(ValueError, match="not a patch"):
        layout.patch_cell(0)
