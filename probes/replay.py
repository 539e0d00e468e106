"""Probes re-run from saved per-image features (features.safetensors), without the backbone."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from common.errors import InsufficientDataError, UserError
from probes.base import Probe


def replay_features(
    probes: Mapping[str, Probe], features: Mapping[str, Tensor], batch_size: int = 4096
) -> tuple[dict[str, float], dict[str, Tensor], dict[str, str]]:
    """Feed `features` (index, label and per-image tensors, one row per image) to `probes` in index order.

    Every probe that does not read the images (`needs_pixels`; `parse_probe_names(pixels=False)`
    refuses those) needs only the per-image variants and splits, so the results and arrays equal
    those of the run that saved the features (up to float64 summation order).

    Returns:
        results, arrays, and probe name -> reason for the probes that saw too few images to compute
        (as the run that saved the features skipped them).
    """
    for required in ("index", "label"):
        if required not in features:
            raise UserError(f"saved features lack {required!r}; they were not written by evaluate.py")
    order = torch.argsort(features["index"])
    rows = {name: tensor[order] for name, tensor in features.items()}
    for start in range(0, len(order), batch_size):
        batch = {name: tensor[start : start + batch_size] for name, tensor in rows.items()}
        for probe in probes.values():
            probe.update(batch, batch["label"], batch["index"])
    results: dict[str, float] = {}
    arrays: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            results.update(probe.compute())
            arrays.update(probe.arrays())
        except InsufficientDataError as error:
            skipped[name] = str(error)
    return results, arrays, skipped
