"""open_clip's image towers (`VisionTransformer`, or a `CLIP` holding one), tiny random models built
with open_clip itself: `output/full` is the tower's own [CLS] readout and `projection/full` its own
image embedding (its forward, `encode_image`) at two image sizes; every block's split is the
[CLS] row of torch's own attention weights; neurons and test-time registers act as hooks on the
tower's own MLP activation say; what the family cannot do is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

open_clip = pytest.importorskip("open_clip")

from harness import (  # noqa: E402
    BackboneUnavailableError,
    DecomposingBackbone,
    UnknownBackboneError,
    load_backbone,
    loading,
    resolve_backbone,
    with_test_time_registers,
)
from harness.decomposition import output_bias_term  # noqa: E402
from harness.errors import CheckpointFormatError  # noqa: E402
from harness.extras import Depth, Intervention, parse_intervention  # noqa: E402
from tests.harness.test_interventions import scaled  # noqa: E402
from tests.harness.test_test_time_registers import authors_placement  # noqa: E402


def tiny_tower(image_size: int = 32, ls_init_value: float | None = None, **overrides: Any) -> nn.Module:
    """A seeded random open_clip `VisionTransformer` (patch 4, width 32, 3 blocks, 4 heads) with
    non-trivial biases, norms and layer scales."""
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    settings: dict[str, Any] = dict(image_size=image_size, patch_size=4, width=32, layers=3, heads=4,
                                    mlp_ratio=2.0, ls_init_value=ls_init_value, output_dim=16)  # fmt: skip
    tower = VisionTransformer(**(settings | overrides)).eval()
    with torch.no_grad():
        for name, parameter in tower.named_parameters():
            if name.endswith("bias") or "gamma" in name or "ln_" in name or "embedding" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return tower


def pixels_for(side: int, count: int = 3) -> Tensor:
    return torch.randn(count, 3, side, side, generator=torch.Generator().manual_seed(side))


@pytest.mark.parametrize("side", [32, 48])
@pytest.mark.parametrize("ls_init_value", [None, 0.5])
@torch.no_grad()
def test_output_and_projection_are_the_towers_own(side: int, ls_init_value: float | None) -> None:
    tower = tiny_tower(side, ls_init_value)
    backbone = DecomposingBackbone.from_model(tower)
    info = backbone.info
    assert (info.family, info.num_layers, info.num_heads, info.patch_size) == ("open_clip", 3, 4, 4)
    assert (info.projection_dim, info.mlp_size, info.num_registers) == (16, 64, 0)
    pixels = pixels_for(side)
    decomposition = backbone(pixels)
    own = backbone.family.pooled(pixels)
    assert_close(decomposition["output/full"], own, **scaled(own))
    embedded = tower(pixels)  # the tower's forward: the image embedding (after `proj`)
    assert_close(decomposition["projection/full"], embedded, **scaled(embedded))
    assert decomposition.pooler_error < 1e-4 * float(own.abs().max())
    # the last block's [CLS] update, the tower's own: ls_1(attn(ln_1(x)))[:, 0]; the groups' terms and
    # the output projection's bias sum to it
    last = backbone.family.blocks[-1]
    seen: list[Tensor] = []
    handle = last.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    backbone.family.pooled(pixels)
    handle.remove()
    normed = last.ln_1(seen[0])
    update = last.ls_1(last.attn(normed, normed, normed, need_weights=False)[0])[:, 0]
    assert_close(decomposition["attention/full"], update, **scaled(update))
    terms = sum(
        decomposition[f"attention/{group}"] - output_bias_term(backbone.last_block)
        for group in ("cls", "patch")
    )
    assert_close(terms + output_bias_term(backbone.last_block), update, **scaled(update))


@torch.no_grad()
def test_a_clip_model_is_read_through_its_image_tower() -> None:
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=dict(image_size=32, patch_size=4, width=32, layers=2, head_width=8, mlp_ratio=2.0),
        text_cfg=dict(context_length=8, vocab_size=50, width=16, heads=2, layers=1),
    ).eval()
    backbone = DecomposingBackbone.from_model(model)
    pixels = pixels_for(32)
    embedded = model.encode_image(pixels)
    assert_close(backbone(pixels)["projection/full"], embedded, **scaled(embedded))


@torch.no_grad()
def test_every_blocks_split_is_torchs_own_attention_row() -> None:
    """Each block's [CLS] split is its `nn.MultiheadAttention`'s own weights (asked for per head)
    summed over the group and averaged over heads."""
    tower = tiny_tower(32, 0.5)
    backbone = DecomposingBackbone.from_model(tower)
    pixels = pixels_for(32)
    inputs: list[Tensor] = []
    handles = [
        block.register_forward_pre_hook(lambda m, i: inputs.append(i[0])) for block in backbone.family.blocks
    ]
    decomposition = backbone(pixels, extras=[Depth((1, 2, 3))])
    for handle in handles:
        handle.remove()
    for number, block in enumerate(backbone.family.blocks, start=1):
        normed = block.ln_1(inputs[number - 1])
        _, weights = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
        cls_row = weights[:, :, 0]  # batch, heads, tokens
        expected = {"cls": cls_row[..., 0].mean(1), "patch": cls_row[..., 1:].sum(-1).mean(1)}
        for group, value in expected.items():
            got = decomposition[f"depth/split/{group}"][:, number - 1]
            assert_close(got, value, rtol=1e-5, atol=1e-6)
    assert_close(
        decomposition["split/patch"], decomposition["depth/split/patch"][:, -1], rtol=1e-5, atol=1e-6
    )


@torch.no_grad()
def test_neurons_and_test_time_registers_act_where_the_towers_own_hooks_say() -> None:
    tower = tiny_tower(32, 0.5)
    backbone = DecomposingBackbone.from_model(tower)
    pixels = pixels_for(32)
    intervention = parse_intervention("neurons@2:3,9:zero", 3)

    def zeroed(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        output = output.clone()
        output[..., [3, 9]] = 0
        return output

    handle = tower.transformer.resblocks[1].mlp.gelu.register_forward_hook(zeroed)
    expected = backbone.family.pooled(pixels)
    handle.remove()
    got = backbone(pixels, extras=[intervention]).pass_of(intervention.name)["output/full"]
    assert_close(got, expected, **scaled(expected))

    neurons = {1: (2, 9), 2: (5,)}
    ours = DecomposingBackbone.from_model(with_test_time_registers(tower, neurons, count=1))
    reference = authors_placement(tower, lambda b: b.mlp.gelu, "ln_pre", True, neurons, count=1)
    expected = DecomposingBackbone.from_model(reference).family.pooled(pixels)
    assert_close(ours(pixels)["output/full"], expected, **scaled(expected))


def test_what_it_cannot_read_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="an attention-pooling head"):
        DecomposingBackbone.from_model(tiny_tower(attentional_pool=True))
    with pytest.raises(ValueError, match="pools with 'avg'"):
        DecomposingBackbone.from_model(tiny_tower(pool_type="avg"))
    backbone = DecomposingBackbone.from_model(tiny_tower(32))
    with pytest.raises(ValueError, match=r"reads 32 x 32 images only"):
        backbone(pixels_for(48))
    with pytest.raises(ValueError, match="use the readout level"):
        backbone(pixels_for(32), extras=[parse_intervention("head2@2:zero", 3)])
    readout = Intervention(("head2",), (2,), "zero", "readout")
    assert torch.isfinite(
        backbone(pixels_for(32), extras=[readout]).pass_of(readout.name)["output/full"]
    ).all()


MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 4,
        "width": 32,
        "layers": 2,
        "head_width": 8,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1},
}
"""A tiny CLIP in open_clip's config format (open_clip_config.json's `model_cfg`)."""


def openclip_folder(folder: Path, weights: bool = True) -> nn.Module:
    """A folder in open_clip's hub layout (open_clip_config.json with its preprocessing, the weights
    as open_clip_model.safetensors), and the model saved there."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.CLIP(**MODEL_CFG).eval()
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess})
    )
    if weights:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors"
        )
    return model


@torch.no_grad()
def test_a_folder_in_open_clips_layout_loads_its_weights_and_preparation(tmp_path: Path) -> None:
    saved = openclip_folder(tmp_path / "tiny-openclip")
    backbone = load_backbone(tmp_path / "tiny-openclip")
    assert backbone.info.family == "open_clip" and backbone.info.source == "folder"
    preparation = backbone.info.preprocessing
    assert (preparation.mean, preparation.interpolation, preparation.resize) == (
        (0.5, 0.5, 0.5),
        "bilinear",
        "square",
    )
    pixels = pixels_for(32)
    expected = saved.encode_image(pixels)
    assert_close(backbone(pixels)["projection/full"], expected, **scaled(expected))


def test_open_clip_names_that_cannot_load_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    openclip_folder(tmp_path / "no-weights", weights=False)
    with pytest.raises(CheckpointFormatError, match=r"holds open_clip_config\.json but no weights file"):
        load_backbone(tmp_path / "no-weights")
    with pytest.raises(UnknownBackboneError, match="name the weights"):
        load_backbone("open_clip:ViT-B-16")
    with pytest.raises(UnknownBackboneError, match="open_clip has no model 'ViT-Q-16'"):
        load_backbone("open_clip:ViT-Q-16@laion2b")
    monkeypatch.setattr(loading, "_hub_unreachable", lambda: "the hub did not answer (test)")
    monkeypatch.setattr(loading, "try_to_load_from_cache", lambda *args, **kwargs: None)
    with pytest.raises(BackboneUnavailableError, match="laion/CLIP-ViT-B-16-laion2B-s34B-b88K"):
        load_backbone("openclip_vitb16_laion2b")
    assert resolve_backbone("openclip_vitl14_laion2b") == (
        "open_clip",
        "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    )


def test_the_command_line_runs_it_at_its_own_size_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cls_decoupling.cli import evaluate
    from tests.conftest import write_photos

    openclip_folder(tmp_path / "tiny-openclip")
    write_photos(tmp_path / "photos", 4)
    common = ["--backbone", str(tmp_path / "tiny-openclip"), "--data", "folder",
              "--data-dir", str(tmp_path / "photos"), "--probe", "split,norms,cka", "--batch-size", "2",
              "--num-workers", "0"]  # fmt: skip
    assert evaluate.main([*common, "--resolution", "48", "--output", str(tmp_path / "wrong")]) == 2
    assert "reads 32 x 32 images only" in capsys.readouterr().err
    for mode in ("zero", "mean"):  # refused before any pass, the reference pass of `mean` included
        spec = ["--resolution", "32", "--intervene", f"head2@2:{mode}", "--output", str(tmp_path / mode)]
        assert evaluate.main([*common, *spec]) == 2
        err = capsys.readouterr().err
        assert "use the readout level" in err and "Traceback" not in err
        assert not (tmp_path / mode / "results.json").exists()
    assert evaluate.main([*common, "--resolution", "32", "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["backbone"]["family"] == "open_clip" and results["backbone"]["projection_dim"] == 16
    assert results["run"]["max_pooler_error"] < 1e-4 and "cka/projection/patch" in results["results"]


@torch.no_grad()
def test_an_open_clip_tower_built_on_timm_is_read_as_its_timm_trunk() -> None:
    """open_clip's SigLIP and other timm towers (`TimmModel`): where nothing follows the trunk, the
    image embedding is the trunk's output, read by the timm family (here: the patches' mean)."""
    text = {"context_length": 8, "vocab_size": 50, "width": 32, "heads": 4, "layers": 1}
    tower = {
        "timm_model_name": "vit_tiny_patch16_224",
        "timm_pool": "avg",
        "timm_proj": "none",
        "image_size": 224,
    }
    torch.manual_seed(0)
    clip = open_clip.CLIP(embed_dim=192, vision_cfg=tower, text_cfg=text).eval()
    backbone = DecomposingBackbone.from_model(clip)
    assert (backbone.info.family, backbone.info.readout) == ("timm", "mean")
    pixels = torch.randn(1, 3, 224, 224)
    expected = clip.encode_image(pixels)
    assert_close(
        backbone(pixels)["output/full"], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item()
    )
    projected = open_clip.CLIP(embed_dim=16, vision_cfg=tower | {"timm_proj": "linear"}, text_cfg=text)
    with pytest.raises(ValueError, match="a projection or pool of its own after its trunk"):
        DecomposingBackbone.from_model(projected)
