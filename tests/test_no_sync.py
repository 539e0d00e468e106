"""The per-batch path reads nothing back from the device (issue 12: no host-device synchronisation).

On an accelerator, a value read back to the host (`.item()`, `if tensor`, `.cpu()`, boolean
indexing, `bincount`, `one_hot`) makes the host wait for every queued kernel, so the next batch
cannot be queued while this one runs. CI has no accelerator, so the same property is proved on
tensors that hold no data: the backbone runs under FakeTensorMode and every per-batch update of the
harness and every probe runs on the meta device, where any data-dependent operation raises.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torchmetrics import MaxMetric

from harness import Decomposition, HarnessModule, LinearHead, all_feature_names
from harness.decomposition import variant_names
from probes import PROBES, ProbeContext, build_probes
from tests.conftest import tiny_model, wrap

META = torch.device("meta")


@pytest.mark.parametrize("registers", [0, 4])
def test_backbone_forward_reads_nothing_back(registers: int) -> None:
    backbone = wrap(tiny_model(registers=registers, patch=14, image=56))
    with FakeTensorMode(allow_non_fake_inputs=True):
        decomposition = backbone(torch.randn(3, 3, 56, 70))
    assert decomposition["output/full"].shape == (3, 32)


def _meta_batch(registers: int, batch: int = 6) -> tuple[HarnessModule, Decomposition, torch.Tensor]:
    backbone = wrap(tiny_model(registers=registers, patch=14, image=56))
    pixels = torch.randn(batch, 3, 56, 56)
    decomposition = backbone(pixels)
    module = HarnessModule(backbone, feature_names=all_feature_names(backbone))
    on_meta = {name: tensor.to(META) for name, tensor in decomposition.items()}
    meta_decomposition = Decomposition(on_meta, decomposition.layout, decomposition.pooler_error.to(META))
    return module, meta_decomposition, pixels.to(META)


@pytest.mark.parametrize("registers", [0, 4])
def test_every_probe_and_record_updates_without_reading_back(registers: int, tmp_path: Path) -> None:
    module, decomposition, pixels = _meta_batch(registers)
    context = ProbeContext(module.backbone.info, ("a", "b", "c"), resolution=56)
    head_path = tmp_path / "head.pt"
    dims = module.backbone.info.hidden_size
    classes = ("a", "b", "c")
    head = LinearHead(torch.zeros(3, dims), torch.zeros(3), "tiny-test", "output/full", classes, 56, 0.1, 0.5)
    head.save(head_path)
    probes = build_probes(list(PROBES), context)  # the ridge classifier as the linear probe
    head_probe = build_probes(["linear"], ProbeContext(context.info, context.class_names, 56, head=head_path))
    module.consumers = nn.ModuleDict({**probes, "linear_head": head_probe["linear"]})
    module.to(META)
    labels, indices = torch.arange(6, device=META) % 3, torch.arange(6, device=META)
    for start in (0, 6):  # the second batch meets the states the first one left
        module.record(decomposition, pixels, labels, indices + start)
    assert set(variant_names(registers)) <= set(decomposition)


def test_a_read_back_is_caught() -> None:
    """The check can fail: torchmetrics' default NaN check on a MaxMetric reads the device."""
    metric = MaxMetric().to(META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        metric.update(torch.ones(3, device=META))
