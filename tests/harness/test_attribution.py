"""Attribution maps (issue 22) against independent computations: the attention map and the rollout
from the model's own eager attention weights (`output_attentions`), per family; the value-weighted and
contribution maps from the last block's own modules, and their sum from the decomposition; the
gradient maps from the gradients of the eager weights; the scores from the model's own blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from harness import DecomposingBackbone, Decomposition
from harness.extras import AttributionMaps, map_names
from harness.extras.attribution import EXPLAINED, SCORE_FRACTIONS, rank_agreement
from harness.extras.scores import ClassScores
from tests.conftest import tiny_model
from tests.harness.test_families import tiny_clip, tiny_dinov3, tiny_vit


def tiny_eager_dinov2() -> nn.Module:
    return tiny_model(
        registers=4, hidden=32, heads=4, layers=3, patch=4, image=32, attn_implementation="eager"
    )


EAGER: dict[str, Callable[[], nn.Module]] = {
    "dinov2": tiny_eager_dinov2,
    "dinov3": lambda: tiny_dinov3(attn_implementation="eager"),
    "vit": lambda: tiny_vit(attn_implementation="eager"),
    "clip": lambda: _eager(tiny_clip()),
}


def _eager(model: nn.Module) -> nn.Module:
    model.config._attn_implementation = "eager"
    return model


def attribution_maps(
    backbone: DecomposingBackbone,
    pixels: Tensor,
    class_scores: ClassScores | None = None,
    every_head: bool = False,
) -> Decomposition:
    """Every registered map of a batch (each head's too where asked), without their scores."""
    heads = tuple(range(1, backbone.info.num_heads + 1)) if every_head else ()
    return backbone(pixels, extras=[AttributionMaps(heads=heads, class_scores=class_scores, scored=False)])


def scored_maps(
    backbone: DecomposingBackbone, pixels: Tensor, seed: int = 0, class_scores: ClassScores | None = None,
    fractions: tuple[float, ...] = SCORE_FRACTIONS, maps: tuple[str, ...] = (),
) -> Decomposition:  # fmt: skip
    """Every registered map (or `maps`) and every head's, scored, for the images 0, 1, ..."""
    heads = tuple(range(1, backbone.info.num_heads + 1))
    scoring = AttributionMaps(maps, heads, fractions, seed, class_scores)
    return backbone(pixels, torch.arange(len(pixels)), extras=[scoring])


def outputs_without(
    backbone: DecomposingBackbone, pixels: Tensor, order: Tensor, fractions: tuple[float, ...],
    insertion: bool = False,
) -> list[Tensor]:  # fmt: skip
    """The pooled outputs with the first round(f x patches) patches of `order` (batch, patches) removed
    (or, with `insertion`, the only ones kept beside [CLS] and the registers), from the model's own
    embeddings, blocks and final norm: the perturbation test written out."""
    layout = backbone.layout_for(pixels)
    embeddings = backbone.family.embed(pixels)
    outputs = []
    for fraction in fractions:
        count = round(fraction * layout.num_patches)
        kept = (order[:, :count] if insertion else order[:, count:]).sort(dim=1).values + layout.num_prefix
        rows = torch.cat([torch.arange(layout.num_prefix).expand(len(pixels), -1), kept], dim=1)
        tokens = embeddings.gather(1, rows.unsqueeze(-1).expand(-1, -1, embeddings.shape[-1]))
        outputs.append(backbone.family.final_norm(backbone.family.encode(tokens, layout)[:, 0]))
    return outputs


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(4))


def rollout_from(attentions: tuple[Tensor, ...], patches: slice) -> Tensor:
    """Abnar & Zuidema's rollout from every layer's attention weights, written from the paper:
    R = prod_l (0.5 mean_h A_l + 0.5 I), the [CLS] row over the patches."""
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens, dtype=torch.float64)
    for attention in attentions:
        rollout = (
            0.5 * attention.double().mean(dim=1) + 0.5 * torch.eye(tokens, dtype=torch.float64)
        ) @ rollout
    return rollout[:, 0, patches]


@pytest.mark.parametrize("family", EAGER)
@torch.no_grad()
def test_attention_and_rollout_are_the_models_own_weights(family: str, pixels: Tensor) -> None:
    backbone = DecomposingBackbone.from_model(EAGER[family]())
    assert backbone.info.family == family
    maps = attribution_maps(backbone, pixels, every_head=True)
    layout = backbone.layout_for(pixels)
    patches, grid = layout.slice("patch"), (layout.grid_height, layout.grid_width)
    resize = {"interpolate_pos_encoding": True} if family in ("vit", "clip") else {}  # 32 x 40 px
    attentions = backbone.model(pixel_values=pixels, output_attentions=True, **resize).attentions
    expected = rollout_from(attentions, patches).float().reshape(3, *grid)
    assert_close(maps["attribution/rollout"], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    last = attentions[-1][:, :, 0, patches].float()
    assert_close(maps["attribution/attention_heads"], last.reshape(3, -1, *grid), rtol=1e-4, atol=1e-6)
    assert_close(maps["attribution/attention"], last.mean(dim=1).reshape(3, *grid), rtol=1e-4, atol=1e-6)
    assert_close(maps["attribution/attention"], backbone(pixels)["map/attention"], rtol=1e-5, atol=1e-7)


def last_block_parts(family: str, model: nn.Module) -> tuple[Any, ...]:
    """The last block, its pre-attention norm, value projection (None: timm's fused qkv) and output
    projection by each family's own module names, and its layer scale (None: none)."""
    if family == "timm":
        block = model.blocks[-1]
        return block, block.norm1, None, block.attn.proj, block.ls1.gamma
    layers = {
        "dinov2": lambda: model.encoder.layer, "dinov3": lambda: model.model.layer,
        "vit": lambda: model.layers, "deit": lambda: model.layers, "clip": lambda: model.encoder.layers,
    }[family]()  # fmt: skip
    block = layers[-1]
    if family in ("dinov2", "dinov3"):
        return block, block.norm1, block.attention.v_proj, block.attention.o_proj, block.layer_scale1.lambda1
    if family == "clip":
        return block, block.layer_norm1, block.self_attn.v_proj, block.self_attn.out_proj, None
    return block, block.layernorm_before, block.attention.v_proj, block.attention.o_proj, None


@pytest.mark.parametrize("family", ["dinov2", "dinov3", "vit", "deit", "clip", "timm"])
@torch.no_grad()
def test_value_weighted_and_contribution_maps_are_each_patchs_exact_term(family: str, pixels: Tensor) -> None:
    """Per family, c_j from the last block's own modules by their own names: its [CLS] attention row
    (the model's eager weights; timm's computed from its fused qkv as its Attention does), value and
    output projections and layer scale; ||c_j|| is the value-weighted map, <c_j, u> the contribution
    map with u the direction of the update (the decomposition's `attention/full`)."""
    from tests.harness.test_interventions import FAMILIES

    model = _eager(FAMILIES[family]()) if family != "timm" else FAMILIES[family]()
    backbone = DecomposingBackbone.from_model(model)
    maps = attribution_maps(backbone, pixels)
    layout = backbone.layout_for(pixels)
    block, norm, value, output, scale = last_block_parts(family, model)
    kept: list[Tensor] = []
    handle = block.register_forward_pre_hook(
        lambda module, args, kwargs: kept.append(args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )
    try:
        if family == "timm":
            backbone.model.forward_features(pixels)
        else:
            resize = {"interpolate_pos_encoding": True} if family in ("vit", "deit", "clip") else {}
            attentions = model(pixel_values=pixels, output_attentions=True, **resize).attentions
    finally:
        handle.remove()
    x = norm(kept[-1])
    batch, tokens, hidden = x.shape
    heads = backbone.info.num_heads
    if family == "timm":
        q, k, v = block.attn.qkv(x).view(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
        weights = ((q[:, :, :1] @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(dim=-1)[:, :, 0]
        values = v.transpose(1, 2)  # batch, tokens, heads, width
    else:
        weights = attentions[-1][:, :, 0]  # batch, heads, tokens
        values = value(x).view(batch, tokens, heads, -1)
    weighted = values * weights.transpose(1, 2).unsqueeze(-1)
    terms = weighted.reshape(batch, tokens, hidden) @ output.weight.T * (1 if scale is None else scale)
    patches, grid = layout.slice("patch"), (layout.grid_height, layout.grid_width)
    expected = terms[:, patches].norm(dim=-1).reshape(batch, *grid)
    assert_close(maps["attribution/value_weighted"], expected, rtol=1e-4, atol=1e-5 * expected.max().item())
    update = backbone(pixels)["attention/full"]
    projected = (terms[:, patches] @ nn.functional.normalize(update, dim=-1).unsqueeze(-1)).reshape(
        batch, *grid
    )
    assert_close(maps["attribution/contribution"], projected, rtol=1e-4, atol=1e-5 * expected.max().item())


def chefer_from(attentions: tuple[Tensor, ...], gradients: tuple[Tensor, ...], patches: slice) -> Tensor:
    """Chefer et al.'s relevance written from the paper: R = I; R += E_h[(grad A * A)^+] R per layer."""
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, dtype=torch.float64).expand(attentions[0].shape[0], -1, -1)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.double() * attention.double()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance[:, 0, patches]


def seeded_head(width: int, classes: int = 5) -> nn.Linear:
    """A random linear head (class scores) on `width` features."""
    torch.manual_seed(7)
    return nn.Linear(width, classes).requires_grad_(False)


def target_of(pooled: Tensor, head: nn.Linear | None) -> Tensor:
    """The maps' target written from the issue: the score of the class the head ranks first, or the
    projection of the output on its own detached direction."""
    if head is None:
        return (pooled * nn.functional.normalize(pooled.detach(), dim=-1)).sum()
    scores = head(pooled)
    return scores.gather(1, scores.detach().argmax(dim=1, keepdim=True)).sum()


@pytest.mark.parametrize("target", ["output", "class"])
@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_gradient_weighted_attention_is_chefers_on_the_models_own_weights(
    family: str, target: str, pixels: Tensor
) -> None:
    """The gradient of the target (the output's projection on its own direction, or a head's score of
    its predicted class) with respect to the eager attention weights the model used, against ours
    (grad O V^T, without materialising attention)."""
    model = EAGER[family]()
    backbone = DecomposingBackbone.from_model(model)
    head = seeded_head(backbone.info.hidden_size) if target == "class" else None
    flags = [parameter.requires_grad for parameter in model.parameters()]
    maps = attribution_maps(backbone, pixels, head)
    assert [parameter.requires_grad for parameter in model.parameters()] == flags  # the model as it was
    assert all(parameter.grad is None for parameter in model.parameters())  # nothing accumulated
    outputs = model(pixel_values=pixels, output_attentions=True)
    gradients = torch.autograd.grad(target_of(outputs.pooler_output, head), outputs.attentions)
    layout = backbone.layout_for(pixels)
    expected = chefer_from(outputs.attentions, gradients, layout.slice("patch")).float()
    expected = expected.reshape(3, layout.grid_height, layout.grid_width)
    assert_close(maps["attribution/chefer"], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    if head is not None:  # another class's relevance differs: the class is what is explained
        assert not torch.allclose(
            maps["attribution/chefer"], attribution_maps(backbone, pixels)["attribution/chefer"]
        )


def test_integrated_gradients_are_complete_over_the_patches(pixels: Tensor) -> None:
    """Integrated gradients (captum) pooled to the patches: the patches sum to the target's change
    from the black image to the image (completeness, up to the integration's error), for the output's
    projection and for a head's score of the class the image is given, and a patch
    whose pixels do not change along the path (image equal to the baseline there) gets nothing."""
    model = EAGER["dinov2"]()
    backbone = DecomposingBackbone.from_model(model)
    pixels = pixels.clone()
    pixels[:, :, :4, :4] = 0  # the first patch is black: no path, no attribution
    head = seeded_head(backbone.info.hidden_size)
    for scores in (None, head):
        maps = attribution_maps(backbone, pixels, scores)
        with torch.no_grad():
            clean = backbone(pixels)["output/full"]
            black = backbone(torch.zeros_like(pixels))["output/full"]
        if scores is None:
            direction = nn.functional.normalize(clean, dim=-1)
            change = ((clean - black) * direction).sum(dim=-1)
        else:  # the score of the class the clean image is given
            explained = head(clean).argmax(dim=1, keepdim=True)
            change = (head(clean) - head(black)).gather(1, explained).squeeze(1)
        total = maps["attribution/integrated_gradients"].flatten(1).sum(dim=1)
        assert_close(total, change, rtol=0, atol=2e-2 * change.abs().max().item())
        assert torch.all(maps["attribution/integrated_gradients"][:, 0, 0] == 0)


@torch.no_grad()
def test_maps_are_scored_by_the_deletion_machinery_and_by_insertion(pixels: Tensor) -> None:
    """Deletion in a map's order is the deletion probe's own passes (for the attention map, the same
    numbers; the shared random control, the deletion probe's random order); insertion keeps only the
    map's first patches, checked against the model's own blocks on the embeddings of [CLS], the
    registers and those patches."""
    from harness.extras import Deletion

    backbone = DecomposingBackbone.from_model(EAGER["dinov2"]())
    fractions = (0.25, 0.5)
    scoring = AttributionMaps(("attention", "contribution"), fractions=fractions, seed=3)
    found = backbone(pixels, torch.arange(3), extras=[scoring, Deletion(fractions, seed=3)])
    for order in ("top", "bottom"):
        assert_close(found[f"maps/attention/deletion/{order}"], found[f"deletion/{order}"], rtol=0, atol=1e-6)
    assert_close(found["maps/random/deletion"], found["deletion/random"], rtol=0, atol=1e-6)
    order = found["attribution/contribution"].flatten(1).argsort(dim=1, descending=True, stable=True)
    for column, pooled in enumerate(outputs_without(backbone, pixels, order, fractions, insertion=True)):
        expected = nn.functional.cosine_similarity(pooled, found["output/full"], dim=-1)
        assert_close(found["maps/contribution/insertion/top"][:, column], expected, rtol=0, atol=1e-6)


def flipping_head(clean: Tensor, deleted: Tensor) -> nn.Linear:
    """Two classes: 0 scores nothing, 1 scores <f, g> - t, with g the mean direction from the clean
    outputs to the deleted ones and t between the two: the clean images are class 0, and class 1
    overtakes as patches go (so a perturbed output's class differs from the clean one's)."""
    direction = nn.functional.normalize((deleted - clean).mean(dim=0), dim=0)
    threshold = ((clean @ direction).max() + (deleted @ direction).min()) / 2
    assert (clean @ direction).max() < threshold < (deleted @ direction).min()
    head = nn.Linear(clean.shape[1], 2).requires_grad_(False)
    head.weight.copy_(torch.stack([torch.zeros_like(direction), direction]))
    head.bias.copy_(torch.stack([torch.zeros_like(threshold), -threshold]))
    return head


@torch.no_grad()
def test_class_scores_follow_the_perturbed_outputs_and_every_head_is_scored(pixels: Tensor) -> None:
    """With class scores, each perturbed output's probability of the class the full output is given
    and its own class, against the head applied to outputs computed here from the model's blocks (a
    head built so that the class changes as patches go); one random control, the same for every map;
    each head's map deleted in its own order (the deletion passes ordered by that head's row of the
    model's eager attention)."""
    model = EAGER["dinov2"]()
    backbone = DecomposingBackbone.from_model(model)
    fractions = (0.1, 0.25, 0.5, 0.75)
    layout = backbone.layout_for(pixels)
    clean = backbone(pixels)["output/full"]
    rollout = attribution_maps(backbone, pixels)["attribution/rollout"]  # no class in it
    order = rollout.flatten(1).argsort(dim=1, descending=True, stable=True)
    deleted = outputs_without(backbone, pixels, order, fractions)
    head = flipping_head(clean, deleted[-1])
    scored = scored_maps(backbone, pixels, seed=2, class_scores=head)
    assert torch.equal(scored[EXPLAINED], head(clean).argmax(dim=1))
    curve = "maps/rollout/deletion/top"
    for column, outputs in enumerate(deleted):
        probability = head(outputs).softmax(dim=1).gather(1, scored[EXPLAINED].unsqueeze(1)).squeeze(1)
        assert_close(scored[f"{curve}/probability"][:, column], probability, rtol=1e-4, atol=1e-6)
        assert torch.equal(scored[f"{curve}/predicted"][:, column], head(outputs).argmax(dim=1))
    assert torch.all(scored[f"{curve}/predicted"][:, -1] != scored[EXPLAINED])  # the class did change
    heads = backbone.info.num_heads
    for score in ("deletion", "insertion"):  # one control, run once, under its own name
        assert f"maps/random/{score}/probability" in scored
        assert not [name for name in scored if name.startswith("maps/") and name.endswith(f"{score}/random")]
    weights = model(pixel_values=pixels, output_attentions=True).attentions[-1][
        :, :, 0, layout.slice("patch")
    ]
    for number in range(1, heads + 1):
        own = weights[:, number - 1].argsort(dim=1, descending=True, stable=True)
        expected = [
            nn.functional.cosine_similarity(o, clean, dim=-1)
            for o in outputs_without(backbone, pixels, own, fractions)
        ]
        assert_close(
            scored[f"maps/attention_head{number}/deletion/top"],
            torch.stack(expected, dim=1),
            rtol=0,
            atol=1e-5,
        )
        assert f"maps/attention_head{number}/deletion/bottom" not in scored  # no reversed control per head
        assert f"maps/attention_head{number}/rank_agreement" in scored


def test_knn_class_scores_are_the_banks_vote_shares() -> None:
    """`KnnScores`: softmax = each class's share of the weighted k-NN votes (DINOv2's), argmax = the
    k-NN's prediction, and a gradient through the chosen neighbours' similarities (finite
    differences)."""
    from probes.metrics.knn import KnnScores, knn_votes

    generator = torch.Generator().manual_seed(3)
    bank, labels = torch.randn(40, 8, generator=generator), torch.arange(40) % 4
    queries = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    scores = KnnScores(bank, labels, 4, k=10).double()
    votes = knn_votes(queries, nn.functional.normalize(bank, dim=-1).double(), labels, 4, (10,))[0]
    assert_close(
        scores(queries).softmax(dim=1), votes / votes.sum(dim=1, keepdim=True), rtol=1e-9, atol=1e-12
    )
    assert torch.equal(scores(queries).argmax(dim=1), votes.argmax(dim=1))
    query = queries[:1].clone().requires_grad_(True)
    predicted = int(votes[0].argmax())
    (gradient,) = torch.autograd.grad(scores(query)[0, predicted], query)
    step, direction = (
        1e-6,
        nn.functional.normalize(torch.randn(1, 8, generator=generator, dtype=torch.float64)),
    )
    ahead, behind = (scores(queries[:1] + sign * step * direction)[0, predicted] for sign in (1, -1))
    assert (ahead - behind).item() / (2 * step) == pytest.approx(
        (gradient * direction).sum().item(), rel=1e-4
    )


def test_rank_agreement_is_spearmans() -> None:
    from scipy.stats import spearmanr

    generator = torch.Generator().manual_seed(1)
    first, second = torch.randn(4, 5, 6, generator=generator), torch.randn(4, 5, 6, generator=generator)
    second[0] = first[0] * 2 + 1  # the same ranking: 1
    agreement = rank_agreement(first, second)
    for image in range(4):
        expected = spearmanr(first[image].flatten().numpy(), second[image].flatten().numpy()).statistic
        assert agreement[image].item() == pytest.approx(expected, abs=1e-6)
    assert agreement[0].item() == pytest.approx(1.0)


def one_patch_model() -> nn.Module:
    """A DINOv2 in which only one patch can reach the output, by construction: no biases, zero [CLS],
    register and position embeddings (a black patch and every prefix token enter as zeros and stay
    zeros: LayerNorm of zero is zero without biases, and so are the MLP and the values), and no
    attention output before the last block (no token mixes with another). The last block's [CLS]
    query is zero, so its attention is uniform: the attention map says every patch counts alike,
    while the output is made by the one non-black patch alone."""
    model = tiny_model(registers=4, hidden=32, heads=4, layers=3, patch=4, image=32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "token" in name or "position_embeddings" in name:
                parameter.zero_()
        for layer in model.encoder.layer[:-1]:
            layer.attention.o_proj.weight.zero_()
    return model


@torch.no_grad()
def test_the_maps_find_the_one_patch_that_makes_the_output() -> None:
    backbone = DecomposingBackbone.from_model(one_patch_model())
    pixels = torch.zeros(2, 3, 32, 32)
    pixels[:, :, 12:16, 8:12] = torch.randn(
        2, 3, 4, 4, generator=torch.Generator().manual_seed(0)
    )  # patch (3, 2)
    maps = attribution_maps(backbone, pixels)
    carrier = 3 * 8 + 2
    for name in ("value_weighted", "contribution", "integrated_gradients"):
        values = maps[f"attribution/{name}"].flatten(1)
        others = torch.cat([values[:, :carrier], values[:, carrier + 1 :]], dim=1)
        assert torch.all(values[:, carrier].abs() > 0) and torch.all(others == 0), name
    attention = maps["attribution/attention"].flatten(1)
    assert_close(attention, attention[:, :1].expand_as(attention))  # uniform: it cannot tell
    curves = backbone(pixels, torch.arange(2), extras=[AttributionMaps(fractions=(0.1, 0.25, 0.5))])
    for name in ("value_weighted", "contribution"):  # the carrier goes first: the output leaves at once
        assert torch.all(curves[f"maps/{name}/deletion/top"].abs() < 1e-6)
        inserted = curves[f"maps/{name}/insertion/top"]  # it alone remakes the output's direction (the
        assert torch.all(inserted > 0.99)  # uniform attention weighs it by 1 / the tokens kept)
        assert torch.all(inserted >= curves["maps/random/insertion"])
    # the uniform attention map deletes in patch order: the carrier (patch 26 of 64) stays up to 25 %
    assert torch.all(curves["maps/attention/deletion/top"][:, :2] > 0.99)


def patch_blind_model() -> nn.Module:
    """A DINOv2 whose [CLS] output ignores the patches, by construction: every block's attention
    output projection has zero weights (its bias stays), so no token takes anything from another,
    while the attention weights are as peaked as a trained model's (queries and keys scaled up): the
    [CLS] row still spreads over the patches unevenly, and a map drawn from it looks like any other."""
    model = tiny_model(registers=4, hidden=32, heads=4, layers=3, patch=4, image=32)
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.o_proj.weight.zero_()
            layer.attention.q_proj.weight.mul_(20)  # a peaked [CLS] row, not the random model's flat one
            layer.attention.k_proj.weight.mul_(20)
    return model


@torch.no_grad()
def test_a_cls_that_ignores_the_patches_has_flat_curves_and_empty_causal_maps(pixels: Tensor) -> None:
    """The maps that read the output (value-weighted, contributions, Chefer's, integrated gradients)
    are zero; the maps that read attention alone (the attention map, rollout) are not; every
    perturbation curve stays at the full output (cosine 1, the class and its probability as they
    were), so every gain is zero: the scores say no map shows what the output used, because it used
    no patch."""
    from probes.attribution import AttributionProbe

    backbone = DecomposingBackbone.from_model(patch_blind_model())
    head = seeded_head(backbone.info.hidden_size)
    scored = scored_maps(backbone, pixels, class_scores=head)
    for name in ("value_weighted", "contribution", "chefer", "integrated_gradients"):
        assert torch.all(scored[f"attribution/{name}"] == 0), name
    for name in ("attention", "rollout"):  # they still point somewhere
        values = scored[f"attribution/{name}"].flatten(1)
        assert torch.all(values > 0) and torch.all(values.amax(dim=1) > 1.5 * values.mean(dim=1)), name
    clean = head(backbone(pixels)["output/full"]).softmax(dim=1).gather(1, scored[EXPLAINED].unsqueeze(1))
    heads, maps = backbone.info.num_heads, len(map_names())
    curves = [name for name in scored if name.startswith("maps/") and name.endswith(("/top", "/bottom"))]
    assert len(curves) == (maps * 2 + heads) * 2  # (maps x their orders + heads' top) x scores
    curves += ["maps/random/deletion", "maps/random/insertion"]
    for name in curves:
        assert_close(scored[name], torch.ones_like(scored[name]), rtol=0, atol=1e-6)
        assert_close(scored[f"{name}/probability"], clean.expand(-1, 4), rtol=1e-5, atol=1e-7)
        assert torch.equal(scored[f"{name}/predicted"], scored[EXPLAINED].unsqueeze(1).expand(-1, 4))
    probe = AttributionProbe(heads=range(1, heads + 1), class_scores=head, labelled=True)
    probe.update(scored.with_entries({"pixels": pixels}), scored[EXPLAINED], torch.arange(3))
    results = probe.compute()
    gains = [name for name in results if name.endswith("/gain")]
    assert len(gains) == (maps + heads) * 2 * 3  # maps x scores x measures
    assert all(abs(results[name]) < 1e-6 for name in gains)


@pytest.mark.parametrize("family", ["dinov2", "dinov3", "vit", "deit", "clip", "timm"])
@torch.no_grad()
def test_the_contributions_sum_to_the_patch_term_in_every_family(family: str, pixels: Tensor) -> None:
    """Per family: the contribution map sums to the decomposition's patch term projected on the
    update, and the value-weighted map is at least each contribution's size (|<c_j, u>| <= ||c_j||)."""
    from tests.harness.test_interventions import FAMILIES

    backbone = DecomposingBackbone.from_model(FAMILIES[family]())
    maps = attribution_maps(backbone, pixels)
    decomposition = backbone(pixels)
    groups = decomposition.layout.groups
    update = decomposition["attention/full"]
    terms = [decomposition[f"attention/{group}"] for group in groups]
    bias = (sum(terms) - update) / (len(terms) - 1)  # attention/g = c_g + c_b, full = sum c_g + c_b
    patch_share = ((decomposition["attention/patch"] - bias) * nn.functional.normalize(update, dim=-1)).sum(
        -1
    )
    total = maps["attribution/contribution"].flatten(1).sum(dim=1)
    assert_close(total, patch_share, rtol=1e-4, atol=1e-5 * update.norm(dim=-1).max().item())
    assert torch.all(
        maps["attribution/contribution"].abs() <= maps["attribution/value_weighted"] * (1 + 1e-5) + 1e-7
    )
