"""How a folder this tool wrote is recognised (docs/design.md#outputs), finished or not.

Layer 0, importing nothing: the outputs write run and comparison folders (layer 3), and the data side
(layer 1) must leave them out of a listing, or the next run over a folder that holds one reads its
figures as images. The only images a run or comparison writes are its `figures/*.png`, so the rule
catches every folder holding `figures/` and a sign of this tool beside it (a folder without
`figures/` stays data, whatever else it holds, e.g. a dataset's own `results.json`):

- a run writes `results.json` first, before any figure, and a comparison keeps `comparison.md` and
  `comparison.csv` from its previous sweep while it writes again;
- a finished folder keeps its marker `.complete`, and the folder a run wrote in place keeps the output
  lock `.NAME.lock` beside it (a file that stays). Neither counts without `figures/`: a download
  (`datamodules.download`) marks its folder with the same name, and a lock may be stale.

A comparison copied elsewhere after it was killed while drawing its first figures (no marker, no
comparison files yet, and its lock left behind) is the one folder of this tool the rule misses.

>>> is_output_folder({"figures", "results.json"})
True
>>> is_output_folder({"figures", "cat.jpg"}), is_output_folder({"figures"}, locked=True)
(False, True)
>>> sorted(locked_folders([".run.lock", "photo.jpg", ".lock", ".x.lock"]))
['run', 'x']
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

RESULTS_FILE = "results.json"
"""A run's results; the first file a run writes."""
COMPLETE_MARKER = ".complete"
"""Written last into a run (or comparison) folder: the folder is finished."""
FIGURES_DIR = "figures"
"""Where a run or comparison writes its figures (the only images it writes)."""
COMPARISON_TABLES = ("comparison.md", "comparison.csv")
"""What a comparison folder holds besides its figures and run folders (`outputs.compare` writes them)."""
LOCK_SUFFIX = ".lock"


def lock_name(folder_name: str) -> str:
    """The file name of the output lock of the folder `folder_name`, a hidden file beside it.

    >>> lock_name("run")
    '.run.lock'
    """
    return f".{folder_name}{LOCK_SUFFIX}"


def locked_folders(names: Iterable[str]) -> set[str]:
    """The folders whose output lock is among the entries `names` of their parent folder."""
    return {
        name[1 : -len(LOCK_SUFFIX)]
        for name in names
        if name.startswith(".") and name.endswith(LOCK_SUFFIX) and len(name) > len(LOCK_SUFFIX) + 1
    }


def is_output_folder(names: Collection[str], locked: bool = False) -> bool:
    """Whether a folder holding the entries `names` is a run or comparison folder of this tool.

    Args:
        names: The names of the folder's entries (files and folders).
        locked: Whether its parent holds its output lock (`lock_name`).

    Returns:
        True for a folder holding `figures/` and any of `results.json`, `comparison.md`,
        `comparison.csv`, the marker `.complete`, or its output lock beside it (a dataset's own
        `results.json` beside images, with no `figures/`, stays data).
    """
    if FIGURES_DIR not in names:  # the only images a run writes: without them, nothing to leave out
        return False
    return (
        RESULTS_FILE in names
        or any(name in names for name in COMPARISON_TABLES)
        or COMPLETE_MARKER in names
        or locked
    )
