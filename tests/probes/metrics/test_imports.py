"""`probes.metrics` is tensors and torchmetrics only: importing it, or any of its modules, in a fresh
interpreter loads no probe, model, data or output module of the project, and neither Lightning nor a
model library."""

from __future__ import annotations

import pkgutil

import probes.metrics
from tests.fresh import HEAVY, modules_after

METRIC_MODULES = sorted(
    f"probes.metrics.{info.name}" for info in pkgutil.iter_modules(probes.metrics.__path__)
)


def test_the_metrics_import_no_model_library_lightning_or_other_layer() -> None:
    assert "probes.metrics.cka" in METRIC_MODULES
    modules = modules_after("\n".join(f"import {name}" for name in ["probes.metrics", *METRIC_MODULES]))
    assert {"torch", "torchmetrics", *METRIC_MODULES} <= modules
    # torchmetrics itself imports transformers when it is installed (its BERTScore module; see
    # Lightning-AI/torchmetrics#2242): only what torchmetrics alone imports is allowed here
    allowed = modules_after("import torch, torchmetrics") & {"transformers"}
    assert modules & HEAVY <= {"torch", *allowed}
    project = {name for name in modules if name.split(".")[0] in ("probes", "harness", "datamodules")}
    assert project == {"probes", "probes.metrics", *METRIC_MODULES}
    assert {name for name in modules if name.startswith("cls_decoupling")} <= {
        "cls_decoupling",
        "common.errors",
        "common.hashing",
        "common.lazy",
    }
