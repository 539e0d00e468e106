from __future__ import annotations

import pytest
import torch

from harness import BackboneInfo
from probes import PROBES, ProbeContext, build_probes, parse_probe_names
from probes.cka import LinearCKA
from probes.cka_probe import CKAProbe

INFO = BackboneInfo("t", "random", "", 8, 2, 2, 4, 4, False, True)


def test_both_cka_estimators_share_one_set_of_moments() -> None:
    probes = build_probes(["split", "cka", "cka_debiased"], ProbeContext(INFO))
    assert list(probes) == ["split", "cka"] and isinstance(probes["cka"], CKAProbe)
    generator = torch.Generator().manual_seed(0)
    batch = {name: torch.randn(12, 8, generator=generator) for name in ("output/full", "output/patch")}
    probe = CKAProbe(["output/full", "output/patch"], 8, estimators=("cka", "cka_debiased"))
    probe.update(batch, torch.zeros(12), torch.arange(12))
    results = probe.compute()
    plain, debiased = LinearCKA(8), LinearCKA(8, debiased=True)
    for metric in (plain, debiased):
        metric.update(batch["output/full"], batch["output/patch"])
    assert results == {
        "cka/output/patch": plain.compute().item(),
        "cka_debiased/output/patch": debiased.compute().item(),
    }


def test_probe_names() -> None:
    assert parse_probe_names("all", labelled=True) == list(PROBES)
    assert "oneshot" not in parse_probe_names("all", labelled=False)
    assert "maps" not in parse_probe_names("all", pixels=False) and "maps" in parse_probe_names("all")
    with pytest.raises(ValueError, match="unknown probe"):
        parse_probe_names("cka,attention_maps")
    with pytest.raises(ValueError, match="estimators must be among"):
        CKAProbe(["output/full", "output/patch"], 8, estimators=("cka_biased",))
