"""Recipes (`--recipe`): every shipped recipe parses and names results the tool writes; a recipe runs
end to end on random stand-ins of its backbones and writes reproduction.md and its figure, measured
against published; the arithmetic of a reproduction on hand-written runs; one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from cls_decoupling.cli import evaluate
from cls_decoupling.outputs.recipes import (
    Published,
    Recipe,
    Row,
    load_recipe,
    point_labels,
    recipe_names,
    reproduction,
    reproduction_figure,
    reproduction_markdown,
)
from common.errors import UserError
from tests.conftest import one_error, write_labelled_photos

RECIPE = """
title = "a test recipe"
about = "two numbers, one ordering"
backbones = ["alpha", "beta"]
options = ["--probe", "knn"]
needs = ["--data-dir"]
percent = true

[[published]]
backbone = "alpha"
result = "knn/output/full/k20/top1"
value = 50.0
tolerance = 1.0
source = "Paper A, Table 1, row alpha"
checked = "read"

[[published]]
backbone = "beta"
result = "knn/output/full/k20/top1"
value = 60.0
tolerance = 1.0
source = "Paper A, Table 1, row beta"
checked = "not checked offline"

[[ordering]]
result = "cka/output/patch"
backbones = ["alpha", "beta"]
source = "Paper A, Fig. 3"
checked = "read"
"""


def test_every_shipped_recipe_parses_and_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """`--recipe list` names every recipe with what it needs; each holds numbers with their sources."""
    names = recipe_names()
    assert "dinov2_knn" in names
    assert evaluate.main(["--recipe", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == names
    for name in names:
        recipe = load_recipe(name)
        assert recipe.published or recipe.orderings, name
        assert all(p.source and p.checked and p.tolerance >= 0 for p in recipe.published), name


def record(results: dict[str, float], random_weights: bool = False) -> dict[str, Any]:
    """A run's results.json record (only what a reproduction reads)."""
    return {"backbone": {"random_weights": random_weights}, "results": results}


def test_a_reproduction_reads_each_number_against_its_run() -> None:
    """Measured in the published unit, the difference, within tolerance or not, a number not measured,
    an ordering held, and the runs matched by name with `random:` stand-ins."""
    recipe = Recipe.parse("test", RECIPE)
    runs = {
        "random:alpha": record({"knn/output/full/k20/top1": 0.505, "cka/output/patch": 0.9}, True),
        "beta": record({"cka/output/patch": 0.2}),
    }
    rows, orderings = reproduction(recipe, runs)
    assert rows[0].measured == pytest.approx(50.5) and rows[0].difference == pytest.approx(0.5)
    assert rows[0].holds and rows[0].random_weights
    assert rows[1].measured is None and rows[1].holds is None
    assert [state for _, state in orderings] == ["holds"]
    text = reproduction_markdown(recipe, rows, orderings)
    assert (
        "Random weights" in text
        and "| alpha | `knn/output/full/k20/top1` | 50.5 | 50 | 0.5 | ±1 | yes |" in text
    )
    assert "| beta | `knn/output/full/k20/top1` | not measured | 60 |" in text
    assert "- Paper A, Table 1, row beta: not checked offline" in text
    assert "1 of 1 measured numbers within tolerance (2 published)" in text
    swapped = {"alpha": runs["beta"], "beta": runs["random:alpha"]}
    assert [state for _, state in reproduction(recipe, swapped)[1]] == ["does not hold"]
    local = {"/weights/a.pth": runs["random:alpha"], "/weights/b.pth": runs["beta"]}  # by position
    assert reproduction(recipe, local)[0][0].measured == pytest.approx(50.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title = 'x'", "is not a recipe: KeyError"),
        ("not toml ===", "is not a recipe: TOMLDecodeError"),
        (RECIPE.replace('backbone = "beta"', 'backbone = "gamma"'), "numbers of backbones it does not run"),
    ],
)
def test_a_broken_recipe_is_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Recipe.parse("broken", text)


def test_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An unknown recipe lists the recipes; a recipe without the data folder it needs names it."""
    assert evaluate.main(["--recipe", "nope", "--output", str(tmp_path / "a")]) == 2
    assert "no recipe 'nope'; the recipes are " in one_error(capsys)
    assert evaluate.main(["--recipe", "dinov2_knn", "--output", str(tmp_path / "b")]) == 2
    assert (
        "recipe dinov2_knn reads --data-dir, --train-dir: add --data-dir PATH, --train-dir PATH"
        in one_error(capsys)
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_recipe_runs_end_to_end_on_random_weights(tmp_path: Path) -> None:
    """`--recipe dinov2_knn` on a random stand-in of one of its backbones, the user's data replacing
    ImageNet: the run, then reproduction.md (the random-weights warning, the measured row equal to the
    run's result in percent, the other rows not measured) and its figure; a second run replaces both."""
    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=3)
    argv = ["--recipe", "dinov2_knn", "--backbone", "random:dinov2_vits14", "--data", "folder", "--data-dir",
            str(photos), "--train-data", "folder", "--train-dir", str(photos), "--resolution", "28",
            "--num-workers", "0", "--output", str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 0
    run = tmp_path / "run"
    measured = json.loads((run / "results.json").read_text())["results"]["knn/output/full/k20/top1"]
    text = (run / "reproduction.md").read_text()
    assert "Random weights: these numbers test the code path, they mean nothing" in text
    assert f"| dinov2_vits14 | `knn/output/full/k20/top1` | {measured * 100:.4g} | 79 |" in text
    assert "| dinov2_vitg14_reg | `knn/output/full/k20/top1` | not measured | 83.7 |" in text
    assert (run / "figures" / "reproduction.png").stat().st_size > 1000
    assert evaluate.main(argv) == 2  # an earlier run is not replaced unasked
    (run / "reproduction.md").write_text("stale")
    assert evaluate.main([*argv, "--overwrite"]) == 0
    assert (run / "reproduction.md").read_text().startswith("# Reproduction: DINOv2")


def test_the_pixel_recipe_names_what_the_pixel_test_writes(tmp_path: Path) -> None:
    """`--recipe chefer2021_table1` on a local random ViT classifier (matched by position): every row
    of Table 1 it compares is measured, each the area the run's results hold."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14, num_labels=3)  # fmt: skip
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    photos = tmp_path / "photos"
    write_labelled_photos(photos, per_class=2)
    argv = ["--recipe", "chefer2021_table1", "--backbone", str(tmp_path / "vit"), "--data", "folder",
            "--data-dir", str(photos), "--resolution", "56", "--num-workers", "0", "--output",
            str(tmp_path / "run")]  # fmt: skip
    assert evaluate.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    text = (tmp_path / "run" / "reproduction.md").read_text()
    assert "not measured" not in text
    for row in load_recipe("chefer2021_table1").published:
        assert f"| `{row.result}` | {results[row.result]:.4g} | {row.value:g} |" in text


@pytest.mark.parametrize("measured", [0, 1, 14])
def test_the_figure_numbers_each_measured_point_and_keys_it(measured: int) -> None:
    """None, one or many measured numbers: a numbered point each, the key beside the axes naming each
    by backbone and what differs of its result, and how many were not measured."""
    rows = [
        Row(Published(f"b{i % 4}", f"intervened/model/register@all/m{i}/linear/output/full/top1" if i % 2
                      else "linear/output/full/top1", 50.0 + i, 1.0, "s", "c"),
            50.0 + i if i < measured else None, False)
        for i in range(14)
    ]  # fmt: skip
    figure = reproduction_figure(Recipe.parse("test", RECIPE), rows)
    axis, key = figure.axes
    assert [text.get_text() for text in axis.texts if text.get_text().isdigit()] == [
        str(n) for n in range(1, measured + 1)
    ]
    shown = key.texts[0].get_text().splitlines()
    keyed = [f"{n}  {label}" for n, label in enumerate(point_labels(rows[:measured]), start=1)]
    assert shown[:measured] == keyed
    assert shown[-1] == f"{14 - measured} of 14 published numbers not measured" or measured == 14
