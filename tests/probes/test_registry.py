from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cls_decoupling.errors import UserError
from harness import BackboneInfo
from probes import (
    PROBE_CLASSES,
    PROBES,
    CKAProbe,
    KnnBank,
    LinearHeadProbe,
    MapsProbe,
    OneShotProbe,
    ProbeContext,
    RidgeProbe,
    build_probes,
    parse_probe_names,
)
from probes.metrics import LinearCKA

INFO = BackboneInfo("t", "random", "", 8, 2, 2, 4, 4, False, True)


def test_both_cka_estimators_share_one_set_of_moments() -> None:
    probes = build_probes(["split", "cka", "cka_debiased"], ProbeContext(INFO))
    assert list(probes) == ["split", "cka"] and isinstance(probes["cka"], CKAProbe)
    assert probes["cka"].estimators == ("cka", "cka_debiased")
    generator = torch.Generator().manual_seed(0)
    batch = {name: torch.randn(12, 8, generator=generator) for name in ("output/full", "output/patch")}
    probe = CKAProbe(["output/full", "output/patch"], 8, estimators=("cka", "cka_debiased"))
    probe.update(batch, torch.zeros(12), torch.arange(12))
    results = probe.compute()
    plain, debiased = LinearCKA(8), LinearCKA(8, debiased=True)
    for metric in (plain, debiased):
        metric.update(batch["output/full"], batch["output/patch"])
    assert results == pytest.approx(
        {"cka/output/patch": plain.compute().item(), "cka_debiased/output/patch": debiased.compute().item()},
        rel=1e-12,
    )


def test_the_registry_is_derived_from_the_probe_classes() -> None:
    assert {probe.name: probe for probe in PROBE_CLASSES} == PROBES
    assert len(set(PROBES)) == len(PROBE_CLASSES)
    labelled = {name for name, probe in PROBES.items() if probe.needs_labels}
    pixels = {name for name, probe in PROBES.items() if probe.needs_pixels}
    unsaved = {name for name, probe in PROBES.items() if not probe.replayable()}
    layers = {name for name, probe in PROBES.items() if probe.needs_layers}
    bank = {name for name, probe in PROBES.items() if probe.needs_bank}
    opt_in = {name for name, probe in PROBES.items() if probe.opt_in}
    assert labelled == {"oneshot", "linear", "knn"} and bank == {"knn"} and opt_in == {"deletion"}
    assert pixels == {"maps", "deletion"} and layers == {"depth", "cka_layers"}
    assert unsaved == pixels | {"cka_layers"}
    everything = [n for n in PROBES if n not in opt_in]
    assert parse_probe_names("all") == everything
    assert parse_probe_names("all", labelled=False) == [n for n in everything if n not in labelled]
    assert parse_probe_names("all", pixels=False) == [n for n in everything if n not in unsaved]
    assert parse_probe_names("all", bank=False) == [n for n in everything if n not in bank]


def test_every_probe_builds_from_the_context_and_names_its_results() -> None:
    """Each class's from_context gives a probe whose results all carry the probe's own name functions'
    prefixes (no name is made up elsewhere)."""
    bank = KnnBank(torch.zeros(3, 8), torch.arange(3), ("a", "b", "c"))
    context = ProbeContext(INFO, ("a", "b", "c"), resolution=8, layers=(1, 2), bank=bank)
    for name, cls in PROBES.items():
        probe = cls.from_context(context)
        assert isinstance(probe, cls) and probe.name == name


def test_linear_is_a_ridge_classifier_without_a_head_and_the_head_with_one(tmp_path: Path) -> None:
    from harness import LinearHead

    context = ProbeContext(INFO, ("a", "b", "c"), resolution=8)
    assert isinstance(PROBES["linear"].from_context(context), RidgeProbe)
    head = LinearHead(torch.zeros(3, 8), torch.zeros(3), "t", "output/full", ("a", "b", "c"), 8, 0.1, 0.5)
    head.save(tmp_path / "head.pt")
    with_head = ProbeContext(INFO, ("a", "b", "c"), resolution=8, head=tmp_path / "head.pt")
    assert isinstance(PROBES["linear"].from_context(with_head), LinearHeadProbe)


def test_probe_names() -> None:
    assert parse_probe_names("all", labelled=True) == [name for name in PROBES if name != "deletion"]
    assert parse_probe_names("all", layers=False) == [
        name for name in PROBES if name not in ("depth", "cka_layers", "deletion")
    ]
    with pytest.raises(UserError, match="add --train-data"):
        parse_probe_names("knn", bank=False)
    with pytest.raises(UserError, match="add --layers"):
        parse_probe_names("split,depth", layers=False)
    assert "oneshot" not in parse_probe_names("all", labelled=False)
    assert "maps" not in parse_probe_names("all", pixels=False) and "maps" in parse_probe_names("all")
    with pytest.raises(UserError, match="unknown probe"):
        parse_probe_names("cka,attention_maps")
    with pytest.raises(UserError, match=r"maps read the images or the \[CLS\] hidden states, .*: run with"):
        parse_probe_names("split,maps", pixels=False)
    assert "cka_layers" not in parse_probe_names("all", pixels=False, layers=True)  # hidden/cls: not saved
    assert "depth" in parse_probe_names("all", pixels=False, layers=True)
    with pytest.raises(UserError, match=r"cka_layers read the images or the \[CLS\] hidden states"):
        parse_probe_names("cka_layers", pixels=False, layers=True)
    with pytest.raises(UserError, match="need class labels"):
        build_probes(["oneshot"], ProbeContext(INFO))
    with pytest.raises(ValueError, match="estimators must be among"):
        CKAProbe(["output/full", "output/patch"], 8, estimators=("cka_biased",))


def test_result_name_functions_give_the_documented_names() -> None:
    assert CKAProbe.result_name("cka_debiased", "output/patch") == "cka_debiased/output/patch"
    assert OneShotProbe.result_name("output/patch", 5) == "oneshot/output/patch/top5"
    assert OneShotProbe.std_name("output/patch", 5) == "oneshot/output/patch/top5_std"
    assert MapsProbe.result_name("attention", "median") == "maps/attention/patch/median"
    assert MapsProbe.gallery_name("least") == "maps/gallery/least"
