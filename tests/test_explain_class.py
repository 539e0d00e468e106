"""`--explain-class label` (Chefer et al.'s `--vis-class target`): the maps explain each image's label
(the predicted class where an image has none), the gradient maps' target is that class's score, the
call needs the labels; results.json records which class was explained; one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from cls_decoupling.cli import evaluate
from harness import DecomposingBackbone
from harness.extras import AttributionMaps
from harness.extras.attribution.attnlrp import _QueriesKeys, token_relevance
from harness.extras.attribution.maps import gradient_target
from tests.conftest import one_error, scaled, tiny_model
from tests.test_train_probe import common_args

PIXELS = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_the_maps_explain_each_images_label() -> None:
    """`maps/explained` is the label (the predicted class where it is -1), and `attnlrp` is the
    relevance for that class's score, computed here from the rules with the label as the target."""
    torch.manual_seed(0)
    backbone = DecomposingBackbone.from_model(tiny_model(registers=4, hidden=32, layers=2, patch=4, image=32))
    head = nn.Linear(32, 4)
    labels = torch.tensor([2, -1, 0])
    extra = AttributionMaps(maps=("attnlrp",), class_scores=head, explain="label", fractions=(0.5,))
    decomposition = backbone(PIXELS, torch.arange(3), extras=[extra], labels=labels)
    predicted = head(decomposition["output/full"]).argmax(dim=-1)
    explained = torch.where(labels >= 0, labels, predicted)
    assert torch.equal(decomposition["maps/explained"], explained)
    tap = _QueriesKeys(2)
    backbone.pooled(PIXELS, [tap])

    def target(pooled: Tensor) -> Tensor:
        return gradient_target(pooled, head, explained)

    relevance, _ = token_relevance(backbone, PIXELS, tap.kept, target)
    expected = relevance[:, decomposition.layout.slice("patch")]
    assert_close(decomposition["attribution/attnlrp"].flatten(1), expected, **scaled(expected))
    with pytest.raises(ValueError, match="reads the images' classes, pass their `labels`"):
        backbone(PIXELS, torch.arange(3), extras=[extra])
    with pytest.raises(ValueError, match="explain the label's class with class scores"):
        AttributionMaps(maps=("attnlrp",), explain="label")


def test_explain_class_end_to_end(classifier_folders: dict[str, Path], tmp_path: Path) -> None:
    folders = classifier_folders
    argv = [*common_args(folders["vit"]), "--data", "folder", "--data-dir", str(folders["val"]),
            "--probe", "attribution", "--head", "model", "--maps", "attention,chefer"]  # fmt: skip
    for explained in ("predicted", "label"):
        assert (
            evaluate.main([*argv, "--explain-class", explained, "--output", str(tmp_path / explained)]) == 0
        )
        written = json.loads((tmp_path / explained / "results.json").read_text())
        assert written["run"]["explained_class"] == explained
        assert 0 <= written["results"]["maps/chefer/deletion/probability/area/top"] <= 1
    assert evaluate.main([*argv, "--output", str(tmp_path / "default")]) == 0
    assert (
        json.loads((tmp_path / "default" / "results.json").read_text())["run"]["explained_class"]
        == "predicted"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--probe", "split", "--explain-class", "label"],
            "--explain-class chooses what the attribution probe",
        ),
        (
            ["--probe", "attribution", "--explain-class", "label"],
            "add --head (a head file, or model) or --train",
        ),
    ],
)
def test_explain_class_refusals(
    classifier_folders: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    folders = classifier_folders
    argv = [
        *common_args(folders["vit"]),
        "--data",
        "folder",
        "--data-dir",
        str(folders["val"]),
        *extra,
    ]
    assert evaluate.main([*argv, "--output", str(tmp_path / "run")]) == 2
    assert message in one_error(capsys) and not (tmp_path / "run").exists()
