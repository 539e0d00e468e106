"""Recipes: published results a user with the weights can reproduce (docs/design.md#recipes). A recipe
is one TOML file of `cls_decoupling/recipes/`: the options of the runs (backbones, data, probes, head,
interventions), each published number with its source and the result it compares with, and the
orderings a figure shows; `reproduction` reads the finished runs against it, `write_reproduction`
writes `reproduction.md` and `figures/reproduction.png`."""

from __future__ import annotations

import itertools
import math
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cls_decoupling.outputs.runs import REPRODUCTION_FILE
from common.errors import UserError
from harness.choices import RANDOM_PREFIX

if TYPE_CHECKING:
    from matplotlib.figure import Figure

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPRODUCTION_FIGURE = "reproduction.png"
"""Its figure, in the folder's `figures/`."""
Record = Mapping[str, Any]
"""A run's results.json record (as `evaluate` returns it): `results`, `backbone.random_weights`."""


@dataclass(frozen=True)
class Published:
    """One published number: `value` (in the paper's unit: percent where `Recipe.percent`) of the run of
    `backbone` under the result name `result`, from `source` (paper, table, row), within `tolerance` of
    it for the reproduction to hold; `checked` says what of the source was read, and where not."""

    backbone: str
    result: str
    value: float
    tolerance: float
    source: str
    checked: str


@dataclass(frozen=True)
class Ordering:
    """A published ordering: `result` decreases along `backbones` (e.g. a figure's bars), from `source`."""

    result: str
    backbones: tuple[str, ...]
    source: str
    checked: str


@dataclass(frozen=True)
class Recipe:
    """A published result and the command that reproduces it.

    Attributes:
        name: the file's stem (`--recipe NAME`).
        title: what it reproduces, one line.
        about: the protocol and what differs from the paper's, where anything does.
        backbones: the runs' backbones (short names).
        options: the other command-line options of the runs.
        needs: options the user must add (the data folders).
        percent: the published numbers are percentages of results in [0, 1].
        published: the numbers.
        orderings: the orderings.
    """

    name: str
    title: str
    about: str
    backbones: tuple[str, ...]
    options: tuple[str, ...]
    needs: tuple[str, ...]
    percent: bool
    published: tuple[Published, ...]
    orderings: tuple[Ordering, ...] = ()

    @classmethod
    def parse(cls, name: str, text: str) -> Recipe:
        """The recipe of a TOML text (`name`: its file's stem).

        Raises:
            UserError: not TOML, a field missing or of the wrong type, a number for no backbone of it.
        """
        try:
            table = tomllib.loads(text)
            recipe = cls(
                name, str(table["title"]), str(table["about"]).strip(),
                tuple(str(b) for b in table["backbones"]), tuple(str(o) for o in table.get("options", ())),
                tuple(str(n) for n in table.get("needs", ())), bool(table.get("percent", False)),
                tuple(Published(str(p["backbone"]), str(p["result"]), float(p["value"]),
                                float(p["tolerance"]), str(p["source"]), str(p["checked"]))
                      for p in table.get("published", ())),
                tuple(Ordering(str(o["result"]), tuple(str(b) for b in o["backbones"]), str(o["source"]),
                               str(o["checked"]))
                      for o in table.get("ordering", ())),
            )  # fmt: skip
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
            raise UserError(f"recipe {name!r} is not a recipe: {type(error).__name__}: {error}") from None
        named = {p.backbone for p in recipe.published} | {b for o in recipe.orderings for b in o.backbones}
        if stray := sorted(named - set(recipe.backbones)):
            raise UserError(f"recipe {name!r} publishes numbers of backbones it does not run: {stray}")
        if not recipe.published and not recipe.orderings:
            raise UserError(f"recipe {name!r} publishes nothing to compare with")
        return recipe

    def argv(self, given: Sequence[str]) -> list[str]:
        """The command line of its runs: its backbones and options, then `given` (the user's, which
        override them: argparse keeps an option's last value).

        Raises:
            UserError: an option of `needs` not given.
        """
        named = {argument.split("=", 1)[0] for argument in given}  # --data-dir PATH or --data-dir=PATH
        if missing := [option for option in self.needs if option not in named]:
            raise UserError(
                f"recipe {self.name} reads {', '.join(missing)}: add "
                + ", ".join(f"{option} PATH" for option in missing)
            )
        return ["--backbone", *self.backbones, *self.options, *given]


def recipe_names() -> list[str]:
    """Every shipped recipe's name, sorted."""
    folder = resources.files("cls_decoupling") / "recipes"
    return sorted(
        entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml")
    )


def load_recipe(name: str) -> Recipe:
    """The shipped recipe `name`.

    Raises:
        UserError: no such recipe (the line lists them).
    """
    if name not in (names := recipe_names()):
        raise UserError(f"no recipe {name!r}; the recipes are {', '.join(names)} (--recipe list)")
    return Recipe.parse(name, (resources.files("cls_decoupling") / "recipes" / f"{name}.toml").read_text())


def listing() -> str:
    """`--recipe list`: each recipe's name, title and the options it needs."""
    lines = []
    for name in recipe_names():
        recipe = load_recipe(name)
        needs = f" (needs {', '.join(recipe.needs)})" if recipe.needs else ""
        lines.append(f"{name}: {recipe.title}{needs}")
    return "\n".join(lines)


def run_of(published: str, runs: Mapping[str, Record], recipe: Recipe) -> Record | None:
    """The record of the recipe's backbone `published` among `runs` (the backbone each was asked with
    -> its results.json record): the run of that name, or of its `random:` stand-in; where no name
    matches and as many backbones ran as the recipe has, the one at its position (local weights)."""
    for name, record in runs.items():
        if name.removeprefix(RANDOM_PREFIX) == published:
            return record
    names = [name.removeprefix(RANDOM_PREFIX) for name in runs]
    if len(runs) == len(recipe.backbones) and not set(names) & set(recipe.backbones):
        return list(runs.values())[recipe.backbones.index(published)]
    return None


@dataclass(frozen=True)
class Row:
    """One published number against its measurement (None: not measured)."""

    published: Published
    measured: float | None
    random_weights: bool

    @property
    def difference(self) -> float | None:
        return None if self.measured is None else self.measured - self.published.value

    @property
    def holds(self) -> bool | None:
        """Within tolerance (None: not measured)."""
        difference = self.difference
        return None if difference is None else abs(difference) <= self.published.tolerance


def reproduction(recipe: Recipe, runs: Mapping[str, Record]) -> tuple[list[Row], list[tuple[Ordering, str]]]:
    """Each published number against the run of its backbone (`run_of`), in the published unit; each
    ordering and whether the runs hold it ("holds", "does not hold", "not measured")."""
    matched = {backbone: run_of(backbone, runs, recipe) for backbone in recipe.backbones}
    read = {
        backbone: (dict(record["results"]), bool(record["backbone"]["random_weights"]))
        for backbone, record in matched.items()
        if record is not None
    }
    scale = 100.0 if recipe.percent else 1.0
    rows = []
    for published in recipe.published:
        results, random_weights = read.get(published.backbone, ({}, False))
        value = results.get(published.result)
        measured = None if value is None or not math.isfinite(value) else value * scale
        rows.append(Row(published, measured, random_weights))
    orderings = []
    for ordering in recipe.orderings:
        found = [read.get(b, ({}, False))[0].get(ordering.result) for b in ordering.backbones]
        values = [float(v) for v in found if v is not None]
        if len(values) < len(found):
            orderings.append((ordering, "not measured"))
        else:
            held = all(a >= b for a, b in itertools.pairwise(values))
            orderings.append((ordering, "holds" if held else "does not hold"))
    return rows, orderings


def _number(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"


def reproduction_markdown(
    recipe: Recipe, rows: Sequence[Row], orderings: Sequence[tuple[Ordering, str]]
) -> str:
    """reproduction.md: the recipe, then a table of measured against published, then the orderings."""
    unit = " (%)" if recipe.percent else ""
    lines = [f"# Reproduction: {recipe.title}", "", f"Recipe `{recipe.name}`. {recipe.about}", ""]
    if any(row.random_weights for row in rows):
        lines += ["**Random weights: these numbers test the code path, they mean nothing.**", ""]
    lines += [
        f"| backbone | result | measured{unit} | published{unit} | difference | tolerance | within "
        "| source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = row.published
        within = {None: "not measured", True: "yes", False: "no"}[row.holds]
        lines.append(
            f"| {p.backbone} | `{p.result}` | {_number(row.measured)} | {p.value:g} | "
            f"{_number(row.difference)} | ±{p.tolerance:g} | {within} | {p.source} |"
        )
    if orderings:
        lines += ["", "| ordering (highest first) | result | runs | source |", "|---|---|---|---|"]
        for ordering, state in orderings:
            lines.append(
                f"| {' > '.join(ordering.backbones)} | `{ordering.result}` | {state} | {ordering.source} |"
            )
    lines += ["", "What was checked of each source:", ""]
    lines += sorted(
        {f"- {p.source}: {p.checked}" for p in recipe.published}
        | {f"- {o.source}: {o.checked}" for o in recipe.orderings}
    )
    measured = sum(row.measured is not None for row in rows)
    held = sum(bool(row.holds) for row in rows)
    lines += ["", f"{held} of {measured} measured numbers within tolerance ({len(rows)} published).", ""]
    return "\n".join(lines)


def point_labels(rows: Sequence[Row]) -> list[str]:
    """Each measured row's label on the figure: its backbone, and what differs of its result name
    where the rows compare several results (the common start and end left out)."""
    results = [row.published.result for row in rows]
    if len(set(results)) < 2:
        return [row.published.backbone for row in rows]
    parts = [result.split("/") for result in results]
    start = 0
    while all(len(p) > start + 1 and p[start] == parts[0][start] for p in parts):
        start += 1
    end = 0
    while all(len(p) > start + end + 1 and p[-1 - end] == parts[0][-1 - end] for p in parts):
        end += 1
    return [
        f"{row.published.backbone}: {'/'.join(p[start : len(p) - end])}"
        for row, p in zip(rows, parts, strict=True)
    ]


def reproduction_figure(recipe: Recipe, rows: Sequence[Row]) -> Figure:
    """Measured against published, one numbered point per measured number (green within tolerance, red
    not; its tolerance as a horizontal bar) on equal axes with the diagonal where they agree, the key of
    the numbers beside it, and how many published numbers were not measured; a figure that says so
    where nothing was."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 5.5), layout="constrained")
    axis, key = figure.subplots(1, 2, width_ratios=(3, 2))
    key.set_axis_off()
    unit = " (%)" if recipe.percent else ""
    figure.suptitle(textwrap.fill(f"{recipe.name}: {recipe.title}", 90), fontsize=9)
    axis.set(xlabel=f"published{unit}", ylabel=f"measured{unit}")
    measured = [row for row in rows if row.measured is not None]
    missing = len(rows) - len(measured)
    notes = [f"{missing} of {len(rows)} published numbers not measured"] if missing else []
    if any(row.random_weights for row in rows):
        notes.append("random weights: the numbers mean nothing")
    if not measured:
        axis.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=axis.transAxes)
    else:
        published = [row.published.value for row in measured]
        values = [float(row.measured) for row in measured if row.measured is not None]
        low, high = min(*published, *values), max(*published, *values)
        pad = 0.05 * (high - low) or 1.0
        ends = [low - pad, high + pad]
        axis.plot(ends, ends, "k--", linewidth=1, label="measured = published")
        axis.set_aspect("equal", adjustable="datalim")
        colours = ["tab:green" if row.holds else "tab:red" for row in measured]
        tolerances = [row.published.tolerance for row in measured]
        axis.errorbar(published, values, xerr=tolerances, fmt="none", ecolor="grey", elinewidth=1, capsize=3)
        axis.scatter(published, values, c=colours, zorder=3)
        for number, (x, y) in enumerate(zip(published, values, strict=True), start=1):
            axis.annotate(str(number), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        axis.legend(loc="upper left", fontsize=8)
        labels = [f"{number}  {label}" for number, label in enumerate(point_labels(measured), start=1)]
        notes = [*labels, "", *notes]
    key.text(
        0, 1, "\n".join(notes), va="top", ha="left", fontsize=7, family="monospace", transform=key.transAxes
    )
    return figure


def write_reproduction(output: Path, recipe: Recipe, runs: Mapping[str, Record]) -> list[Row]:
    """OUT/reproduction.md and OUT/figures/reproduction.png of the finished `runs` (the backbone each
    was asked with -> its results.json record; each file written whole or not at all); its rows."""
    from PIL import Image

    from cls_decoupling.outputs.writing import render

    rows, orderings = reproduction(recipe, runs)
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    partial = figures / f".{REPRODUCTION_FIGURE}.part"
    Image.fromarray(render(reproduction_figure(recipe, rows))).save(partial, format="PNG")
    partial.replace(figures / REPRODUCTION_FIGURE)
    text = (
        reproduction_markdown(recipe, rows, orderings)
        + f"\n![measured against published](figures/{REPRODUCTION_FIGURE})\n"
    )
    partial = output / f".{REPRODUCTION_FILE}.part"
    partial.write_text(text)
    partial.replace(output / REPRODUCTION_FILE)
    return rows
