from itertools import pairwise

import pytest

from harness.tokens import TokenLayout


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "registers"])
def test_groups_tile_the_sequence(registers: int) -> None:
    layout = TokenLayout.for_image(224, 280, patch_size=14, num_registers=registers)
    spans = [layout.slice(g) for g in ("cls", "register", "patch")]
    assert spans[0].start == 0 and spans[-1].stop == layout.num_tokens
    assert all(a.stop == b.start for a, b in pairwise(spans))
    assert layout.num_tokens == 1 + registers + 16 * 20


def test_unknown_group_and_bad_layout() -> None:
    with pytest.raises(ValueError, match="unknown token group 'patches'"):
        TokenLayout(0, 2, 2).slice("patches")
    with pytest.raises(ValueError, match="invalid token layout"):
        TokenLayout(-1, 2, 2)
