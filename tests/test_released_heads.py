"""DINOv2's released linear heads (`--head FILE` in their layout, `--head dinov2` / `dinov2_linear4`):
the input the linear probe builds for them is DINOv2's `_LinearClassifierWrapper`'s, written here from
its description, on random weights saved in the released layout; the `_clsonly` reading holds the patch
mean at its mean over the data; and the refusals are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import Tensor, nn
from torch.testing import assert_close
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

import harness.families.dinov2
from cls_decoupling.cli import evaluate
from harness import DecomposingBackbone, LinearHead
from probes.linear import LinearHeadProbe
from tests.conftest import one_error, scaled, tiny_model, write_labelled_photos

HIDDEN = 32


def wrapper_input(model: nn.Module, images: Tensor, blocks: int, registers: int) -> Tensor:
    """DINOv2's `_LinearClassifierWrapper` input: with one block, the final-normed [CLS] joined with the
    mean of the final-normed patch tokens (registers left out); with four, the final-normed [CLS] after
    each of the last four blocks (`get_intermediate_layers(n=4, norm=True)`), then the last one's patch
    mean. Written from the description, on the HF model's own hidden states and final norm."""
    with torch.no_grad():
        states = model(pixel_values=images, output_hidden_states=True).hidden_states[-blocks:]
        normed = [model.layernorm(state) for state in states]
        return torch.cat([*(n[:, 0] for n in normed), normed[-1][:, 1 + registers :].mean(dim=1)], dim=1)


def released_head(path: Path, blocks: int, classes: int, seed: int = 0) -> nn.Linear:
    """A random head saved as DINOv2 releases its heads: the state dict of nn.Linear((1 + blocks) d, C)."""
    torch.manual_seed(seed)
    head = nn.Linear((1 + blocks) * HIDDEN, classes)
    torch.save(head.state_dict(), path)
    return head


@pytest.mark.parametrize(("blocks", "registers"), [(1, 0), (4, 0), (1, 4), (4, 4)])
def test_the_head_input_is_dinov2s_wrappers(blocks: int, registers: int, tmp_path: Path) -> None:
    """For each layout, with and without registers: the head's input for `output/full` equals the
    wrapper's, its top-1 and top-5 accuracies equal the wrapper's predictions scored against labels, and
    `output/full_clsonly` equals the head on the wrapper's input with the patch mean replaced by its
    mean over every image (fed in two batches)."""
    model = tiny_model(registers=registers, hidden=HIDDEN, layers=5, heads=4, patch=14, image=56, seed=3)
    backbone = DecomposingBackbone.from_model(model)
    name = "dinov2_vits14" + ("_reg4" if registers else "") + f"_linear{4 if blocks == 4 else ''}_head.pth"
    head_module = released_head(tmp_path / name, blocks, classes=7)
    head = LinearHead.load(tmp_path / name)
    assert head.released and head.blocks(HIDDEN) == blocks
    images = torch.randn(10, 3, 56, 42, generator=torch.Generator().manual_seed(4))
    expected_input = wrapper_input(model, images, blocks, registers)
    with torch.no_grad():
        expected = head_module(expected_input)
    labels = torch.arange(10) % 7
    labels[:6] = expected[:6].argmax(dim=1)  # six right at least, the rest as they fall
    probe = LinearHeadProbe(head, ("output/full", "output/patch"), HIDDEN)
    for part in (slice(0, 4), slice(4, 10)):
        decomposition = backbone(images[part])
        built = probe.head_input(decomposition, "output/full")
        assert_close(built, expected_input[part], **scaled(expected_input))
        probe.update(decomposition, labels[part], torch.arange(10)[part])
    results = probe.compute()
    top = expected.topk(5, dim=1).indices
    assert results["linear/output/full/top1"] == pytest.approx((top[:, 0] == labels).double().mean().item())
    assert results["linear/output/full/top5"] == pytest.approx(
        (top == labels[:, None]).any(1).double().mean().item()
    )
    held = expected_input.clone()
    held[:, -HIDDEN:] = expected_input[:, -HIDDEN:].mean(dim=0)
    with torch.no_grad():
        held_top1 = (head_module(held).argmax(dim=1) == labels).double().mean().item()
    assert results["linear/output/full_clsonly/top1"] == pytest.approx(held_top1)
    assert "linear/output/patch/top1" in results and "linear/output/patch_clsonly/top1" not in results


def common_args(model: str | Path, data: Path) -> list[str]:
    return ["--backbone", str(model), "--resolution", "56", "--num-workers", "0", "--batch-size", "8",
            "--data", "folder", "--data-dir", str(data), "--probe", "linear"]  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("released")
    tiny_model(registers=4, hidden=HIDDEN, layers=5, heads=4, patch=14, image=56, seed=5).save_pretrained(
        root / "model"
    )
    write_labelled_photos(root / "val", per_class=3)
    for blocks in (1, 4):
        released_head(
            root / f"dinov2_vits14_reg4_linear{4 if blocks == 4 else ''}_head.pth", blocks, 3, blocks
        )
    return {"root": root, "model": root / "model", "val": root / "val"}


@pytest.mark.parametrize("blocks", [1, 4])
def test_a_released_head_file_end_to_end(saved: dict[str, Path], blocks: int, tmp_path: Path) -> None:
    """`--head dinov2_..._linear[4]_head.pth`: every variant's accuracy is the head on DINOv2's input
    built from the saved features with numpy, and a replay from the features gives the same numbers."""
    file = saved["root"] / f"dinov2_vits14_reg4_linear{4 if blocks == 4 else ''}_head.pth"
    argv = [*common_args(saved["model"], saved["val"]), "--head", str(file), "--save-features"]
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["run"]["head"] == str(file.resolve())
    results, features = written["results"], load_file(str(tmp_path / "run" / "features.safetensors"))
    state = torch.load(file, weights_only=True)
    weight, bias = state["weight"].numpy(), state["bias"].numpy()
    earlier = features["linear_input/cls"][:, -blocks:-1].reshape(len(features["label"]), -1)
    for variant in ("output/full", "output/patch", "output/register", "output/skip"):
        inputs = np.concatenate([earlier, features[variant], features["linear_input/patch_mean"]], axis=1)
        expected = np.mean((inputs @ weight.T + bias).argmax(1) == features["label"])
        assert results[f"linear/{variant}/top1"] == pytest.approx(expected, abs=1e-6), variant
    assert 0 <= results["linear/output/full_clsonly/top1"] <= 1
    replay = ["--from-features", str(tmp_path / "run"), "--probe", "linear", "--head", str(file)]
    assert evaluate.main([*replay, "--output", str(tmp_path / "replay")]) == 0
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())["results"]
    assert {k: v for k, v in replayed.items() if k.startswith("linear/")} == pytest.approx(
        {k: v for k, v in results.items() if k.startswith("linear/")}
    )


def test_head_dinov2_reads_torch_hubs_cache(
    saved: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--head dinov2` takes the backbone's released head from torch.hub's cache, where DINOv2's hub code
    keeps it; without it and with the host unreachable, one line naming the file and what to do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(harness.families.dinov2, "RELEASED_HEADS", "http://127.0.0.1:9/dinov2")
    argv = [*common_args("random:dinov2_vits14", saved["val"]), "--resolution", "28", "--head", "dinov2"]
    assert evaluate.main([*argv, "--output", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err
    assert (
        "cannot fetch the released head http://127.0.0.1:9/dinov2/dinov2_vits14/dinov2_vits14_linear_head.pth"
        in error
    )
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "none").exists()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)  # the failed fetch made it
    assert not list(cache.iterdir())  # and left no part of a file
    torch.manual_seed(0)
    torch.save(nn.Linear(2 * 384, 3).state_dict(), cache / "dinov2_vits14_linear_head.pth")
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["run"]["head"] == str(cache / "dinov2_vits14_linear_head.pth")
    assert 0 <= written["results"]["linear/output/full_clsonly/top1"] <= 1


@pytest.mark.parametrize(
    ("backbone", "head", "message"),
    [
        ("random:tiny", "dinov2", "no linear head was released for 'random:tiny'"),
        ("model", "wide", "it was released for another model size"),
        ("model", "classes", "the DINOv2 head has 5 classes, the data 3"),
    ],
)
def test_released_head_refusals(
    saved: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], backbone: str, head: str,
    message: str,
) -> None:  # fmt: skip
    """A backbone without a released head, a head of another width, of other classes: one line each."""
    files = {"wide": (3, 3 * HIDDEN), "classes": (5, 2 * HIDDEN)}
    if head in files:
        rows, width = files[head]
        torch.save({"weight": torch.zeros(rows, width), "bias": torch.zeros(rows)}, tmp_path / "head.pth")
        head = str(tmp_path / "head.pth")
    model = saved["model"] if backbone == "model" else backbone
    argv = [*common_args(model, saved["val"]), "--head", head, "--output", str(tmp_path / "run")]
    assert evaluate.main(argv) == 2
    assert message in one_error(capsys) and not (tmp_path / "run").exists()


def test_the_attribution_probe_explains_the_released_heads_class(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    """The maps explain the class the released head gives each image on DINOv2's input (its accuracy is
    the head's on the saved features), the perturbation curves follow it with the patch mean and the
    earlier [CLS] the clean image's; the pixel test, which classifies whole perturbed images, is
    refused with such a head in one line."""
    file = saved["root"] / "dinov2_vits14_reg4_linear4_head.pth"
    argv = [*common_args(saved["model"], saved["val"]), "--head", str(file), "--maps", "attention,attnlrp"]
    argv[argv.index("linear")] = "attribution"
    assert evaluate.main([*argv, "--save-features", "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    features = load_file(str(tmp_path / "run" / "features.safetensors"))
    state = torch.load(file, weights_only=True)
    earlier = features["linear_input/cls"][:, :3].reshape(len(features["label"]), -1)
    inputs = np.concatenate([earlier, features["output/full"], features["linear_input/patch_mean"]], axis=1)
    expected = np.mean(
        (inputs @ state["weight"].numpy().T + state["bias"].numpy()).argmax(1) == features["label"]
    )
    assert results["maps/full/accuracy"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= results["maps/attnlrp/deletion/probability/area/top"] <= 1


def test_released_scores_tile_each_images_inputs() -> None:
    """Bound to a call, a released head's class scores of k x batch pooled rows read image i's own
    earlier [CLS] and patch mean at rows i, batch + i, ... (how the perturbation passes stack them)."""
    torch.manual_seed(0)
    head = LinearHead.of_released(torch.randn(3, 5 * HIDDEN), torch.randn(3))
    entries = {
        "linear_input/cls": torch.randn(2, 4, HIDDEN),
        "linear_input/patch_mean": torch.randn(2, HIDDEN),
    }
    scores = head.class_scores(HIDDEN).bind(entries)
    pooled = torch.randn(6, HIDDEN)  # three passes of the two images
    for row in range(6):
        image = row % 2
        joined = torch.cat([entries["linear_input/cls"][image, :3].flatten(), pooled[row],
                            entries["linear_input/patch_mean"][image]])  # fmt: skip
        assert_close(scores(pooled)[row], joined @ head.weight.T + head.bias)
    with pytest.raises(ValueError, match="not a whole number"):
        scores(pooled[:5])


def test_head_model_reads_a_dinov2_classifier_as_a_released_head(
    saved: dict[str, Path], tmp_path: Path
) -> None:
    """A `Dinov2ForImageClassification` checkpoint with `--head model`: its classifier reads DINOv2's
    one-block input, so every variant's accuracy is its weights on that input from the saved features."""
    torch.manual_seed(0)
    config = Dinov2WithRegistersConfig(hidden_size=HIDDEN, num_hidden_layers=5, num_attention_heads=4,
                                       intermediate_size=64, image_size=56, patch_size=14,
                                       num_register_tokens=4, num_labels=3)  # fmt: skip
    model = Dinov2WithRegistersForImageClassification(config)
    model.save_pretrained(tmp_path / "classifier")
    argv = [*common_args(tmp_path / "classifier", saved["val"]), "--head", "model", "--save-features"]
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    features = load_file(str(tmp_path / "run" / "features.safetensors"))
    weight, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    for variant in ("output/full", "output/patch"):
        inputs = np.concatenate([features[variant], features["linear_input/patch_mean"]], axis=1)
        expected = np.mean((inputs @ weight.T + bias).argmax(1) == features["label"])
        assert results[f"linear/{variant}/top1"] == pytest.approx(expected, abs=1e-6), variant
    assert "linear/output/full_clsonly/top1" in results
