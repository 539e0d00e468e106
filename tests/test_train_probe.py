"""train_probe.py then evaluate.py --probe linear, end to end, and the refusals around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import ViTConfig, ViTForImageClassification

from cls_decoupling.cli import evaluate, train_probe
from harness import LinearHead
from tests.conftest import tiny_model, write_labelled_photos


def common_args(model: Path) -> list[str]:
    return ["--backbone", str(model), "--resolution", "56", "--num-workers", "0", "--batch-size", "8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("linear")
    tiny_model(registers=4, hidden=32, heads=2, patch=14, image=56).save_pretrained(root / "model")
    write_labelled_photos(root / "train", per_class=10)
    write_labelled_photos(root / "val", per_class=4)
    argv = [
        *common_args(root / "model"),
        "--data",
        "folder",
        "--data-dir",
        str(root / "train"),
        "--output",
        str(root / "head.pt"),
    ]
    assert (
        train_probe.main([*argv, "--epochs", "5", "--val-fraction", "0.3", "--learning-rates", "0.01,0.1,1"])
        == 0
    )
    return {"root": root, "model": root / "model", "head": root / "head.pt", "val": root / "val"}


def test_head_records_what_it_was_trained_for(setup: dict[str, Path]) -> None:
    head = LinearHead.load(setup["head"])
    assert head.class_names == ("astronaut", "china", "flower")
    assert head.backbone == str(setup["model"].resolve()) and head.feature == "output/full"
    assert head.weight.shape == (3, 32) and head.learning_rate in (0.01, 0.1, 1.0)
    assert 0.0 <= head.validation_top1 <= 1.0 and head.resolution == 56


def test_evaluate_with_head_equals_numpy_accuracy(setup: dict[str, Path]) -> None:
    output = setup["root"] / "evaluated"
    argv = [
        *common_args(setup["model"]),
        "--data",
        "folder",
        "--data-dir",
        str(setup["val"]),
        "--probe",
        "linear",
    ]
    assert (
        evaluate.main([*argv, "--head", str(setup["head"]), "--output", str(output), "--save-features"]) == 0
    )
    results = json.loads((output / "results.json").read_text())["results"]
    features = load_file(str(output / "features.safetensors"))
    head = LinearHead.load(setup["head"])
    for variant in ("output/full", "output/patch", "output/register", "output/skip"):
        scores = features[variant] @ head.weight.numpy().T + head.bias.numpy()
        expected = float(np.mean(scores.argmax(1) == features["label"]))
        assert results[f"linear/{variant}/top1"] == pytest.approx(expected, abs=1e-6), variant
        assert results[f"linear/{variant}/top5"] == 1.0  # 3 classes: top-5 is every class


def test_without_head_a_ridge_classifier_gives_a_number(setup: dict[str, Path], tmp_path: Path) -> None:
    argv = [*common_args(setup["model"]), "--data", "folder", "--data-dir", str(setup["root"] / "train")]
    assert evaluate.main([*argv, "--probe", "linear,oneshot", "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert results["linear/train_images"] + results["linear/test_images"] == 30
    assert 0.0 <= results["linear/output/full/top1"] <= 1.0
    assert results["oneshot/classes"] == 3 and results["oneshot/episodes"] == 10


def test_head_for_another_backbone_or_classes_is_refused(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--resolution", "56", "--num-workers", "0", "--probe", "linear", "--head", str(setup["head"])]
    other_model = tmp_path / "other"
    tiny_model(registers=4, hidden=32, heads=2, patch=14, image=56, seed=1).save_pretrained(other_model)
    code = evaluate.main(
        [*argv, "--backbone", str(other_model), "--data", "folder", "--data-dir", str(setup["val"]),
         "--output", str(tmp_path / "a")]
    )  # fmt: skip
    assert code == 2 and "trained on backbone" in capsys.readouterr().err
    two_classes = tmp_path / "two"
    for name in ("china", "flower"):
        (two_classes / name).mkdir(parents=True)
        for image in (setup["val"] / name).iterdir():
            (two_classes / name / image.name).write_bytes(image.read_bytes())
    code = evaluate.main(
        [*argv, "--backbone", str(setup["model"]), "--data", "folder", "--data-dir", str(two_classes),
         "--output", str(tmp_path / "b")]
    )  # fmt: skip
    assert code == 2 and "trained on 3 classes" in capsys.readouterr().err


def test_label_probes_on_unlabelled_data(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*common_args(setup["model"]), "--data", "demo"]
    assert evaluate.main([*argv, "--probe", "oneshot", "--output", str(tmp_path / "a")]) == 2
    assert "need class labels" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before any image was processed
    assert evaluate.main([*argv, "--probe", "all", "--output", str(tmp_path / "b")]) == 0
    results = json.loads((tmp_path / "b" / "results.json").read_text())["results"]
    assert any(name.startswith("cka/") for name in results) and not any(
        name.startswith("oneshot/") for name in results
    )


def test_existing_head_is_not_overwritten(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = setup["head"].read_bytes()
    argv = [
        *common_args(setup["model"]),
        "--data",
        "folder",
        "--data-dir",
        str(setup["val"]),
        "--output",
        str(setup["head"]),
    ]
    assert train_probe.main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert setup["head"].read_bytes() == before
    torch.testing.assert_close(LinearHead.load(setup["head"]).weight, LinearHead.load(setup["head"]).weight)


def test_the_attribution_maps_explain_the_heads_class(setup: dict[str, Path]) -> None:
    """--probe attribution --head: the maps explain the class the head gives each full image, whose
    top-1 accuracy (`maps/full/accuracy`) equals the head on the saved output/full; every map has its
    accuracy and probability curves (each head's too: `--maps all,heads`), and the figure and the
    report show them."""
    output = setup["root"] / "attribution"
    argv = [*common_args(setup["model"]), "--data", "folder", "--data-dir", str(setup["val"]),
            "--probe", "attribution", "--head", str(setup["head"]), "--save-features",
            "--maps", "all,heads", "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    results = json.loads((output / "results.json").read_text())["results"]
    features = load_file(str(output / "features.safetensors"))
    head = LinearHead.load(setup["head"])
    scores = features["output/full"] @ head.weight.numpy().T + head.bias.numpy()
    assert results["maps/full/accuracy"] == pytest.approx(np.mean(scores.argmax(1) == features["label"]))
    for measure in ("cosine", "probability", "accuracy"):
        for name in ("attention", "chefer", "contribution", "attention_head2"):
            assert -1 <= results[f"maps/{name}/deletion/{measure}/gain"] <= 1, (name, measure)
        assert 0 <= results[f"maps/random/insertion/{measure}/area"] <= 1
    assert (output / "figures" / "attribution.png").is_file()
    assert "maps/chefer/deletion/accuracy/gain" in (output / "report.md").read_text()


def own_classifier_model(folder: Path, classes: int) -> ViTForImageClassification:
    """A random ImageNet-style ViT classifier (`classes` labels) saved as a user would have it."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=56, patch_size=14, num_labels=classes)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():  # weights blind to the output all images share (so the images differ in
        # class), a bias that shows if it is lost
        generator = torch.Generator().manual_seed(1)
        shared = model.vit(pixel_values=torch.randn(8, 3, 56, 56, generator=generator))[0][:, 0].mean(0)
        weight = torch.randn(classes, 32, generator=generator)
        weight -= torch.outer(weight @ shared, shared) / shared.dot(shared)
        model.classifier.weight.copy_(2 * weight)
        model.classifier.bias.normal_(std=2.0, generator=generator)
    model.save_pretrained(folder)
    return model


def test_head_model_reads_the_backbones_own_classifier(setup: dict[str, Path], tmp_path: Path) -> None:
    """--head model: the linear probe's accuracy and the attribution maps' class are the checkpoint's own
    classifier on output/full (computed here from the saved features and the model's own weights)."""
    model = own_classifier_model(tmp_path / "vit", classes=3)
    output = tmp_path / "own"
    argv = [*common_args(tmp_path / "vit"), "--data", "folder", "--data-dir", str(setup["val"]), "--probe",
            "linear,attribution", "--head", "model", "--save-features", "--output", str(output)]  # fmt: skip
    assert evaluate.main(argv) == 0
    written = json.loads((output / "results.json").read_text())
    assert written["run"]["head"] == "model" and written["backbone"]["num_classes"] == 3
    features = load_file(str(output / "features.safetensors"))
    weight, bias = model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy()
    expected = np.mean((features["output/full"] @ weight.T + bias).argmax(1) == features["label"])
    results = written["results"]
    assert results["linear/output/full/top1"] == pytest.approx(expected, abs=1e-6)
    assert results["maps/full/accuracy"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= results["maps/chefer/deletion/probability/area/top"] <= 1


def test_head_model_refusals(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backbone without a classifier of its own is refused in one line; a classifier of other classes
    than the data's is refused by the linear probe and read without accuracy by the attribution probe."""
    data = ["--data", "folder", "--data-dir", str(setup["val"]), "--head", "model"]
    argv = [*common_args(setup["model"]), *data, "--probe", "attribution", "--output", str(tmp_path / "a")]
    assert evaluate.main(argv) == 2
    assert "has no classifier of its own" in capsys.readouterr().err and not (tmp_path / "a").exists()
    own_classifier_model(tmp_path / "vit5", classes=5)
    argv = [*common_args(tmp_path / "vit5"), *data, "--probe", "linear", "--output", str(tmp_path / "b")]
    assert evaluate.main(argv) == 2
    assert "own classifier has 5 classes, the data 3" in capsys.readouterr().err
    argv = [*common_args(tmp_path / "vit5"), *data, "--probe", "attribution", "--save-features",
            "--output", str(tmp_path / "c")]  # fmt: skip
    assert evaluate.main(argv) == 0
    results = json.loads((tmp_path / "c" / "results.json").read_text())["results"]
    assert "maps/full/accuracy" not in results and "maps/chefer/deletion/probability/gain" in results
    replay = ["--from-features", str(tmp_path / "c"), "--probe", "linear", "--head", "model"]
    assert evaluate.main([*replay, "--output", str(tmp_path / "d")]) == 2
    assert "run the backbone, not saved features" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_a_learning_rate_chosen_on_few_images_is_warned_about(
    setup: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 34: with a handful of validation images the choice was made without a word."""
    argv = [*common_args(setup["model"]), "--data", "folder", "--data-dir", str(setup["val"]),
            "--output", str(tmp_path / "head.pt"), "--epochs", "1", "--val-fraction", "0.2",
            "--learning-rates", "0.01,0.1"]  # fmt: skip
    with caplog.at_level("WARNING"):
        assert train_probe.main(argv) == 0
    assert any("the choice is close to arbitrary" in record.getMessage() for record in caplog.records)
