from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.errors import InsufficientDataError, UserError
from harness import BackboneInfo
from harness.extras import Intervention, RegisterNeurons
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

INFO = BackboneInfo("t", "random", "", 8, 2, 2, 4, 4, False, True, mlp_size=32)
SEARCH = RegisterNeurons(1.0, 1, 2)
"""The register_neurons probe's search (the authors publish none for a test model)."""


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
    assert (
        labelled == {"oneshot", "linear", "knn"}
        and bank == {"knn"}
        and opt_in == {"deletion", "attribution", "register_neurons"}
    )
    interventions = {name for name, probe in PROBES.items() if probe.needs_interventions}
    assert pixels == {
        "maps",
        "deletion",
        "interventions",
        "attribution",
        "heads",
        "register_neurons",
    } and layers == {
        "depth",
        "cka_layers",
    }
    assert interventions == {"interventions"}
    readable = {
        name: probe.under_interventions for name, probe in PROBES.items() if probe.under_interventions
    }
    assert readable == {
        "oneshot": "outputs", "linear": "outputs", "knn": "outputs",  # output variants only
        "split": "decomposition", "cka": "decomposition", "cka_debiased": "decomposition",
        "norms": "decomposition", "deletion": "deletion", "registers": "decomposition",
        "maps": "decomposition", "layerwise": "decomposition",
    }  # fmt: skip
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
    context = ProbeContext(
        INFO, ("a", "b", "c"), resolution=8, layers=(1, 2), bank=bank, neuron_search=SEARCH
    )
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
    opt_in = ("deletion", "attribution", "register_neurons")  # extra passes: never in `all`
    assert parse_probe_names("all", labelled=True) == [n for n in PROBES if n not in opt_in]
    assert parse_probe_names("all", layers=False) == [
        name for name in PROBES if name not in ("depth", "cka_layers", *opt_in)
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


def test_every_probe_class_of_the_package_registers_itself() -> None:
    """Each module of probes/ is imported by the registry and each class that names itself is a
    `--probe` (nothing to list by hand); a second class with a taken name is refused."""
    import importlib
    import inspect
    import pkgutil

    import probes
    from probes.base import Probe

    defined = {}
    for module in pkgutil.iter_modules(probes.__path__):
        for _, cls in inspect.getmembers(importlib.import_module(f"probes.{module.name}"), inspect.isclass):
            if issubclass(cls, Probe) and "name" in cls.__dict__:
                defined[cls.name] = cls
    assert defined == PROBES
    assert [probe.position for probe in PROBE_CLASSES] == sorted(probe.position for probe in PROBE_CLASSES)
    with pytest.raises(TypeError, match="two probes are named 'split'"):

        class AnotherSplit(Probe):
            name = "split"


def test_the_selection_is_parsed_once_and_its_probes_say_what_each_call_computes() -> None:
    """Each built probe names the extras it needs, with the run's settings (one route: the module
    merges them); a probe that reads only the decomposition needs none."""
    from harness import merged_extras
    from harness.extras import Deletion, Depth
    from probes import DeletionProbe, ProbeSelection

    selection = ProbeSelection.parse("knn,deletion,split")
    assert selection.names == ("knn", "deletion", "split") and not selection.everything
    assert selection.needs_bank and not selection.reads_head and "deletion" in selection
    built = ProbeSelection.parse("deletion,split,depth,cka_layers").build(
        ProbeContext(INFO, seed=7, layers=(1, 2))
    )
    asked = merged_extras(extra for probe in built.values() for extra in probe.extras())
    assert asked == (Deletion(DeletionProbe.FRACTIONS, seed=7), Depth((1, 2)))
    assert built["split"].extras() == () and built["cka_layers"].extras() == ()
    everything = ProbeSelection.parse("all", bank=True)
    assert everything.everything and "deletion" not in everything
    unlabelled = everything.for_data(labelled=False)
    assert unlabelled.names == tuple(name for name in everything.names if not PROBES[name].needs_labels)
    assert everything.for_data(labelled=True) == everything
    named = ProbeSelection.parse("oneshot,split")
    assert named.for_data(labelled=False) == named  # asked for by name: `build` refuses it, with the reason
    with pytest.raises(UserError, match="need class labels"):
        named.for_data(labelled=False).build(ProbeContext(INFO))
    assert ProbeSelection.parse("linear").reads_head


@pytest.mark.parametrize("images", [1, 2, 50])
def test_every_probe_draws_its_figures_and_names_its_headlines(images: int) -> None:
    """Every probe fed one batch of 1, 2 or 50 images: its headlines name results it computed, each
    draws its own figures (and comparison figures) from the run, rendered to PNG without error,
    under file names no other probe uses."""
    import io
    from dataclasses import dataclass, field

    import matplotlib.pyplot as plt

    from harness import feed, merged_extras, variant_names
    from tests.conftest import tiny_model, wrap

    backbone = wrap(tiny_model(registers=4))
    tiny = backbone.info
    bank = KnnBank(torch.randn(9, tiny.hidden_size), torch.arange(9) % 3, ("a", "b", "c"))
    interventions = (Intervention(("register",), (1,), "zero"), Intervention(("register",), (2,), "zero"))
    context = ProbeContext(
        tiny,
        ("a", "b", "c"),
        resolution=32,
        layers=(1, 2),
        bank=bank,
        interventions=interventions,
        neuron_search=SEARCH,
    )
    built = build_probes(list(PROBES), context)
    pixels = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # what the probes ask: the layers, the deletion passes (also under each intervention), the
    # interventions, the attribution maps with the bank's class scores (the accuracy measure too)
    extras = merged_extras(extra for probe in built.values() for extra in probe.extras())
    decomposition = backbone(pixels, torch.arange(images), extras=extras)
    feed(built.values(), decomposition, pixels, torch.arange(images) % 3, torch.arange(images))
    results: dict[str, float] = {}
    arrays: dict[str, torch.Tensor] = {}
    skipped = set()
    for key, probe in built.items():  # as HarnessModule: a probe short of images is skipped
        try:
            results |= probe.compute()
            arrays |= probe.arrays()
        except InsufficientDataError:
            skipped.add(key.split("@")[0])
    few = {"oneshot", "linear", "registers", "knn", "cka_layers", "heads"}  # need more than 2 images
    assert skipped <= few and (images <= 2 or not skipped)

    names = tuple(intervention.name for intervention in interventions)

    @dataclass(frozen=True)
    class InMemoryRun:  # what probes.view.RunView asks of a finished run
        results: dict[str, float]
        arrays: dict[str, torch.Tensor]
        info: BackboneInfo = tiny
        backbone: str = "tiny"
        num_images: int = images
        num_classes: int = 3
        resolution: int = 32
        variants: tuple[str, ...] = field(default=variant_names(4))
        num_layers: int = tiny.num_layers
        num_registers: int = 4
        num_distillation: int = 0
        interventions: tuple[str, ...] = names

    @dataclass(frozen=True)
    class Labelled:
        label: str
        run: InMemoryRun

    run = InMemoryRun(results, {name: value.cpu() for name, value in arrays.items()})
    drawn: dict[str, str] = {}
    for probe in PROBE_CLASSES:
        figures = {**probe.figures(run), **probe.comparison_figures([Labelled("a", run), Labelled("b", run)])}
        if probe.name not in skipped:
            for name, _ in probe.headlines():
                assert name in results, (probe.name, name)
            shown = [name for name, _ in probe.run_headlines(run) if name in results]
            assert len(shown) >= len(probe.headlines()), probe.name  # named from the run's results
            assert figures, f"{probe.name} drew no figure"
        for file_name, figure in figures.items():
            assert drawn.setdefault(file_name, probe.name) == probe.name, file_name
            figure.savefig(io.BytesIO(), format="png", dpi=40)  # drawn through, ticks and all
            plt.close(figure)
        empty = InMemoryRun({}, {})
        assert probe.figures(empty) == {} and probe.comparison_figures([Labelled("a", empty)]) == {}
    if images <= 2:
        return
    assert {"knn.png", "compare_knn.png", "interventions_blocks.png"} <= set(drawn)
    shown = {name for name, _ in PROBES["interventions"].run_headlines(run) if name in results}
    for intervention in interventions:  # its cosine and the label probes read again under it
        assert {
            intervention.prefix + "cosine_to_clean",
            intervention.prefix + "knn/output/full/k20/top1",
        } <= shown


def test_every_probe_a_pooled_model_feeds_draws_its_figures() -> None:
    """The same on a model read by an attention-pooling head, without [CLS] (SigLIP), its patches
    split by norm: every probe it can feed (the others are refused for it) computes and draws its
    figures and comparison figures to PNG."""
    import io
    from dataclasses import dataclass, replace

    import matplotlib.pyplot as plt

    from harness import DecomposingBackbone, feed, merged_extras
    from harness.extras.interventions.recording import record_reference
    from harness.extras.interventions.reference import ReferenceStatistics
    from probes import ProbeSelection
    from tests.harness.test_pooled import tiny_siglip

    backbone = DecomposingBackbone.from_model(tiny_siglip())
    info = replace(backbone.info, artifact_threshold=1.0)
    backbone = backbone.with_artifacts(1.0)
    selection = ProbeSelection(tuple(PROBES), everything=True).for_model(info)  # every probe it can feed
    assert {"layerwise", "cka_layers"}.isdisjoint(selection.names) and "split" in selection.names
    bank = KnnBank(torch.randn(9, info.hidden_size), torch.arange(9) % 3, ("a", "b", "c"))
    interventions = (Intervention(("artifact",), (2,), "zero"), Intervention(("patch",), (1,), "mean"))
    pixels = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = ReferenceStatistics(bank_size=4)
    record_reference(backbone, pixels, torch.arange(12), interventions, reference)
    interventions = tuple(intervention.using(reference) for intervention in interventions)
    context = ProbeContext(info, ("a", "b", "c"), resolution=32, bank=bank, interventions=interventions,
                           neuron_search=SEARCH)  # fmt: skip
    built = selection.build(context)
    extras = merged_extras(extra for probe in built.values() for extra in probe.extras())
    decomposition = backbone(pixels, torch.arange(12), extras=extras)
    feed(built.values(), decomposition, pixels, torch.arange(12) % 3, torch.arange(12))
    results = {name: value for probe in built.values() for name, value in probe.compute().items()}
    arrays = {name: value.cpu() for probe in built.values() for name, value in probe.arrays().items()}

    @dataclass(frozen=True)
    class InMemoryRun:
        results: dict[str, float]
        arrays: dict[str, torch.Tensor]
        info: BackboneInfo
        backbone: str = "siglip"
        num_images: int = 12
        num_classes: int = 3
        resolution: int = 32
        num_layers: int = 2
        num_registers: int = 0
        num_distillation: int = 0
        interventions: tuple[str, ...] = ()

        @property
        def variants(self) -> tuple[str, ...]:
            return self.info.variant_names()

    @dataclass(frozen=True)
    class Labelled:
        label: str
        run: InMemoryRun

    run = InMemoryRun(results, arrays, info, interventions=tuple(i.name for i in interventions))
    assert "split/artifact/mean" in results and not any(name.endswith("/skip") for name in results)
    for name in selection.names:
        probe = PROBES[name]
        figures = {**probe.figures(run), **probe.comparison_figures([Labelled("a", run), Labelled("b", run)])}
        assert figures, f"{name} drew no figure"
        for figure in figures.values():
            figure.savefig(io.BytesIO(), format="png", dpi=40)
            plt.close(figure)
