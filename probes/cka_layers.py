"""Layer x layer CKA probe (`--layers`): how alike the [CLS] states of the chosen blocks are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
from torch import Tensor, nn

from common.errors import InsufficientDataError
from harness.decomposition import HIDDEN_CLS
from probes.base import Probe, ProbeContext
from probes.metrics.cka import SharedReferenceCKA
from probes.plotting import cka_heatmap, run_title, subplots
from probes.view import RunView

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class LayerCKAProbe(Probe):
    """Linear and debiased CKA between the [CLS] states after every pair of chosen blocks.

    Results: `cka_layers/{i}/{j}` and `cka_layers_debiased/{i}/{j}` for chosen blocks i < j (the
    matrix is symmetric with 1 on its diagonal). One `SharedReferenceCKA` per block i holds block
    i's moments once and its cross moments with every later block: exact, streaming and DDP-safe
    like every CKA here, at (blocks x (blocks + 1) / 2) x hidden² float64 of state, which is why the
    blocks are the ones `--layers` names (every 4th block of a ViT-g/14: 11 blocks, 1.2 GB).
    """

    name = "cka_layers"
    needs_cls = True  # hidden/cls
    position = 110
    needs_layers = True
    needs_hidden_states = True  # hidden/cls: not in features.safetensors
    ESTIMATORS: ClassVar[tuple[str, ...]] = ("cka_layers", "cka_layers_debiased")

    @staticmethod
    def result_name(estimator: str, first: int, second: int) -> str:
        """`{estimator}/{i}/{j}`, i < j (block numbers)."""
        return f"{estimator}/{min(first, second)}/{max(first, second)}"

    @classmethod
    def from_context(cls, context: ProbeContext) -> LayerCKAProbe:
        return cls(context.layers, context.info.hidden_size)

    def __init__(self, layers: Sequence[int], hidden_size: int) -> None:
        super().__init__()
        self.layers = tuple(layers)  # fewer than 2: nothing to compare, skipped with its reason
        self.metrics = nn.ModuleDict(
            {
                str(layer): SharedReferenceCKA(hidden_size, len(self.layers) - i - 1)
                for i, layer in enumerate(self.layers[:-1])
            }
        )

    def update(self, decomposition: Mapping[str, Tensor], labels: Tensor, indices: Tensor) -> None:
        states = decomposition[HIDDEN_CLS]  # batch, blocks + 1 (0 = embeddings), hidden
        for i, layer in enumerate(self.layers[:-1]):
            later = states[:, list(self.layers[i + 1 :])].transpose(0, 1)  # later blocks, batch, hidden
            self._metric(layer).update(states[:, layer], later)

    def compute(self) -> dict[str, float]:
        if len(self.layers) < 2:
            raise InsufficientDataError(
                f"layer x layer CKA needs 2 or more blocks (--layers), got {list(self.layers)}"
            )
        results = {}
        for i, layer in enumerate(self.layers[:-1]):
            for estimator in self.ESTIMATORS:
                values = self._metric(layer).compute_estimate(estimator.endswith("_debiased")).tolist()
                for later, value in zip(self.layers[i + 1 :], values, strict=True):
                    results[self.result_name(estimator, layer, later)] = value
        return results

    def _metric(self, layer: int) -> SharedReferenceCKA:
        return cast(SharedReferenceCKA, self.metrics[str(layer)])

    @classmethod
    def matrix(cls, run: RunView, estimator: str) -> tuple[list[int], np.ndarray] | None:
        """The blocks and the symmetric block x block CKA matrix of `estimator` (1 on the diagonal);
        None without 2 blocks."""
        blocks = range(run.num_layers + 1)
        layers = [
            block for block in blocks
            if any(cls.result_name(estimator, block, other) in run.results for other in blocks
                   if other != block)
        ]  # fmt: skip
        if len(layers) < 2:
            return None
        matrix = np.eye(len(layers))
        for i, first in enumerate(layers):
            for j, second in enumerate(layers[i + 1 :], start=i + 1):
                matrix[i, j] = matrix[j, i] = run.results[cls.result_name(estimator, first, second)]
        return layers, matrix

    @classmethod
    def figures(cls, run: RunView) -> dict[str, Figure]:
        """CKA between the [CLS] states after the chosen blocks (linear and debiased)."""
        matrices = {estimator: cls.matrix(run, estimator) for estimator in cls.ESTIMATORS}
        if any(found is None for found in matrices.values()):
            return {}
        figure, axes = subplots(1, 2, figsize=(11, 4.8))
        for axis, (estimator, found) in zip(axes, matrices.items(), strict=True):
            layers, matrix = cast(tuple[list[int], np.ndarray], found)
            cka_heatmap(axis, [str(layer) for layer in layers], matrix, estimator.replace("_", " "))
            axis.set_xlabel("block")
            axis.set_ylabel("block")
        figure.suptitle(f"[CLS] states across blocks (CKA)\n{run_title(run)}", fontsize=10)
        figure.tight_layout()
        return {"cka_layers.png": figure}
