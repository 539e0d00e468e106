"""The per-batch path never makes the host wait for the device (issue 12: no host-device syncs).

On an accelerator, a value read back to the host (`.item()`, `if tensor`, `.cpu()`, boolean
indexing, `bincount`, `one_hot`) makes the host wait for every queued kernel, and so does a tensor
copied from the host (`torch.tensor(..., device=...)`, `.to(device)` of a host tensor: a blocking
copy): the next batch cannot be queued while this one runs. CI has no accelerator, so the same
property is proved on tensors that hold no data: the backbone runs under FakeTensorMode, every
per-batch update of the harness and every probe runs on the meta device, where any data-dependent
operation raises, and `HostToDeviceCopies` records every copy from the host onto that device.
(On a GPU, bench/gpu_end_to_end.py checks the same with torch.cuda's sync debug mode.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torchmetrics import MaxMetric

from harness import (
    DecomposingBackbone,
    Decomposition,
    Extra,
    HarnessModule,
    LinearHead,
    all_feature_names,
    load_backbone,
)
from harness.decomposition import variant_names
from harness.extras import (
    DELETION_FRACTIONS,
    AttributionMaps,
    Deletion,
    Depth,
    HeadTerms,
    Intervention,
    RegisterNeurons,
)
from probes import PROBES, KnnBank, ProbeContext, build_probes
from tests.conftest import tiny_model, wrap
from tests.families import FAMILY_FOLDERS, save_family_models

META = torch.device("meta")
_MADE_FROM_HOST_DATA = (torch.tensor, torch.as_tensor, torch.asarray)
_MOVES = (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_)


def _target_device(args: tuple[object, ...], kwargs: dict[str, object]) -> torch.device | None:
    """The device a `Tensor.to(...)` call names (positionally, by keyword, or as a tensor's device)."""
    for value in (kwargs.get("device"), *args):
        if isinstance(value, (str, torch.device)):
            try:
                return torch.device(value)
            except RuntimeError:  # a string that names no device
                continue
        if isinstance(value, torch.Tensor):
            return value.device
    return None


class HostToDeviceCopies(TorchFunctionMode):
    """Records (function name) every copy of host data onto `device` made through torch's Python API:
    torch.tensor / as_tensor / asarray on that device, and .to / .cuda / .copy_ of a host tensor
    onto it."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.copies = device, []  # type: ignore[var-annotated]

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _MADE_FROM_HOST_DATA and _target_device((), kwargs) == self.device:
            self.copies.append(func.__name__)
        elif func in _MOVES and args and isinstance(args[0], torch.Tensor):
            source, target = (args[1], args[0]) if func is torch.Tensor.copy_ else (args[0], None)
            target_device = (
                target.device if isinstance(target, torch.Tensor) else _target_device(args[1:], kwargs)
            )
            if (
                isinstance(source, torch.Tensor)
                and source.device.type == "cpu"
                and target_device == self.device
            ):
                self.copies.append(func.__name__)
        return func(*args, **kwargs)


def first_three(pooled: torch.Tensor) -> torch.Tensor:
    """Class scores of any width: the first three features (`harness.extras.ClassScores`)."""
    return pooled[:, :3]


def everything(backbone: DecomposingBackbone) -> list[Extra]:
    """The extras of a backbone call that does all it can: blocks decomposed as they run (with their
    per-head terms), deletion
    passes (also under a model-level intervention), a readout-level intervention, every attribution
    map and each head's with their scores and class scores, and the register-neuron search."""
    deletion, layers = Deletion(DELETION_FRACTIONS), backbone.info.num_layers
    heads = tuple(range(1, backbone.info.num_heads + 1))
    return [
        Depth((1, 2)), HeadTerms((1, 2)), deletion,
        Intervention.parse("cls@1:zero", layers).running([deletion]),
        Intervention.parse("cls+skip@last:zero:readout", layers),
        AttributionMaps(heads=heads, class_scores=first_three), RegisterNeurons(1.0, 1, 2),
    ]  # fmt: skip


@pytest.mark.parametrize("registers", [0, 4])
def test_backbone_forward_reads_nothing_back(registers: int) -> None:
    backbone = wrap(tiny_model(registers=registers, patch=14, image=56))
    with FakeTensorMode(allow_non_fake_inputs=True):  # every block decomposed too, and the deletion passes
        decomposition = backbone(torch.randn(3, 3, 56, 70), torch.arange(3), extras=everything(backbone))
    assert decomposition["output/full"].shape == (3, 32)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_family_models(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize("name", FAMILY_FOLDERS)
def test_every_familys_forward_reads_nothing_back(name: str, family_models: dict[str, Path]) -> None:
    """The same for every family as `load_backbone` gives it: DINOv3's key rotation, timm's fused qkv,
    CLIP's projection, DeiT's distillation token."""
    backbone = load_backbone(family_models[name])
    with FakeTensorMode(allow_non_fake_inputs=True):
        decomposition = backbone(torch.randn(3, 3, 56, 70), torch.arange(3), extras=everything(backbone))
    assert decomposition["output/full"].shape == (3, backbone.info.hidden_size)


def _meta_batch(registers: int, batch: int = 6) -> tuple[HarnessModule, Decomposition, torch.Tensor]:
    backbone = wrap(tiny_model(registers=registers, patch=14, image=56))
    pixels = torch.randn(batch, 3, 56, 56)
    decomposition = backbone(pixels, torch.arange(batch), extras=everything(backbone))
    module = HarnessModule(backbone, feature_names=all_feature_names(backbone.info, layers=True))
    on_meta = {name: tensor.to(META) for name, tensor in decomposition.items()}
    meta_decomposition = Decomposition(on_meta, decomposition.layout, decomposition.pooler_error.to(META))
    return module, meta_decomposition, pixels.to(META)


@pytest.mark.parametrize("registers", [0, 4])
def test_every_probe_and_record_updates_without_reading_back(registers: int, tmp_path: Path) -> None:
    module, decomposition, pixels = _meta_batch(registers)
    bank = KnnBank(torch.randn(20, module.backbone.info.hidden_size), torch.arange(20) % 3, ("a", "b", "c"))
    context = ProbeContext(
        module.backbone.info, ("a", "b", "c"), resolution=56, layers=(1, 2), bank=bank,
        neuron_search=RegisterNeurons(1.0, 1, 2),
    )  # fmt: skip
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
    with HostToDeviceCopies(META) as copies:
        for start in (0, 6):  # the second batch meets the states the first one left
            module.record(decomposition, pixels, labels, indices + start)
    assert copies.copies == [], f"host-to-device copies in the per-batch path: {copies.copies}"
    assert set(variant_names(registers)) <= set(decomposition)


def test_host_to_device_copies_are_caught() -> None:
    """The copy check can fail: each way of copying host data onto the device is recorded."""
    with HostToDeviceCopies(META) as copies:
        torch.tensor([1.0, 2.0], device=META)
        torch.ones(2).to(META)
        torch.ones(2).to("meta", torch.float64)
        torch.zeros(2, device=META).copy_(torch.ones(2))
        torch.zeros(2, device=META) + 1  # a Python number is no copy
        torch.ones(2, device=META).to(torch.float64)  # nor a dtype change on the device
    assert copies.copies == ["tensor", "to", "to", "copy_"]


def test_a_read_back_is_caught() -> None:
    """The check can fail: torchmetrics' default NaN check on a MaxMetric reads the device."""
    metric = MaxMetric().to(META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        metric.update(torch.ones(3, device=META))
