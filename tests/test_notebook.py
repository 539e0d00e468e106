"""The example notebook runs, cell after cell, on random weights (what it shows then means nothing),
so it never rots: its code cells are executed in one namespace, as a kernel would."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "decoupling.ipynb"


def test_the_example_notebook_runs_on_random_weights() -> None:
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code and all(not cell["outputs"] for cell in code)  # shipped without outputs
    namespace: dict[str, object] = {}
    for number, cell in enumerate(code):
        source = "".join(cell["source"])
        exec(compile(source, f"{NOTEBOOK.name} cell {number}", "exec"), namespace)
    plt.close("all")
    assert namespace["REAL_WEIGHTS"] is False
    assert float(namespace["decomposition"].pooler_error) < 1e-4  # type: ignore[attr-defined]
    assert set(namespace["cka"]) >= {"output/patch", "output/register", "output/cls"}  # type: ignore[arg-type]
    assert namespace["split"]["artifact/count"].sum() > 0  # type: ignore[index]
