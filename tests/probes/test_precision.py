"""Under bf16 autocast the decomposition stays float32 and every metric accumulator float64."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from harness import feed, merged_extras
from harness.extras import RegisterNeurons
from probes import PROBES, KnnBank, ProbeContext, build_probes
from tests.conftest import tiny_model, wrap


def test_probes_accumulate_in_float64_under_bf16_autocast() -> None:
    backbone = wrap(tiny_model(registers=4, swiglu=True))
    bank = KnnBank(torch.randn(9, backbone.info.hidden_size), torch.arange(9) % 3, ("a", "b", "c"))
    search = RegisterNeurons(1.0, 1, 2)  # the register_neurons probe's search (every token an outlier)
    context = ProbeContext(
        backbone.info, ("a", "b", "c"), resolution=32, layers=(1, 2), bank=bank, neuron_search=search
    )
    probes = build_probes(list(PROBES), context)
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # with what the probes ask: the per-layer decomposition (the depth probe), the deletion passes
        # (its probe) and the attribution maps with the bank's class scores (theirs)
        extras = merged_extras(extra for probe in probes.values() for extra in probe.extras())
        decomposition = backbone(pixels, torch.arange(6), extras=extras)
        feed(probes.values(), decomposition, pixels, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6))
    assert all(decomposition[name].dtype == torch.float32 for name in decomposition.variants)
    assert decomposition["maps/attention/deletion/top/probability"].dtype == torch.float32
    dtypes = {
        getattr(metric, name).dtype
        for probe in probes.values()
        for metric in probe.modules()
        if isinstance(metric, Metric)
        for name in metric._defaults
        if isinstance(getattr(metric, name), torch.Tensor) and getattr(metric, name).is_floating_point()
    }
    assert dtypes == {torch.float64}
    results = {name: value for probe in probes.values() for name, value in probe.compute().items()}
    assert all(
        torch.isfinite(torch.tensor(value)) for name, value in results.items() if name.startswith("cka/")
    )
