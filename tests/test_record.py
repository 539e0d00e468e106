"""results.json as a typed, versioned record: written and read back the same, files of the version
before the schema was versioned read, newer or foreign files refused in one line."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from cls_decoupling.outputs import SCHEMA_VERSION, DataRecord, RunRecord, RunSettings
from cls_decoupling.outputs.runs import strict_json
from common.errors import UserError
from harness import BackboneInfo

EARLIER = Path(__file__).parent / "outputs_data" / "results_main_8b98c10.json"
"""results.json as the version before the schema was versioned wrote it (a `--layers all` run of
random:tiny_reg on the demo photos, three results kept)."""


def test_a_results_json_of_the_version_before_reads_and_writes_back_the_same() -> None:
    written = json.loads(EARLIER.read_text())
    record = RunRecord.from_dict(written)
    assert record.backbone == BackboneInfo.from_dict(written["backbone"])
    assert record.backbone.preprocessing.mean == tuple(written["backbone"]["image_mean"])
    assert record.data.num_images == 16 and record.run.layers == (1, 2) and not record.replayed
    assert record.results == written["results"]
    again = record.as_dict()
    assert again.pop("schema_version") == SCHEMA_VERSION == 1
    assert json.dumps(again) == json.dumps(written)  # the same keys, values and order


def test_a_replay_omits_the_backbone_pass_and_reads_back() -> None:
    record = RunRecord.from_dict(json.loads(EARLIER.read_text()))
    replay = dataclasses.replace(
        record,
        data=dataclasses.replace(record.data, from_features="/runs/earlier"),
        run=RunSettings(probes=("cka",), layers=(1, 2), seconds=0.5, torch="2"),
        results={"cka/output/patch": math.nan},
    )
    written = json.loads(strict_json(replay.as_dict()))
    assert set(written["run"]) == {
        "probes",
        "skipped_probes",
        "episodes",
        "shots",
        "seconds",
        "layers",
        "torch",
    }
    assert (
        written["data"]["from_features"] == "/runs/earlier" and written["results"]["cka/output/patch"] is None
    )
    again = RunRecord.from_dict({**written, "results": {"cka/output/patch": math.nan}})
    assert again.replayed and again.run == replay.run and again.data == replay.data


def test_a_data_record_counts_what_the_run_skipped() -> None:
    description = {"source": "folder", "data_dir": "/photos", "files": 3, "class_names": ["a", "b"]}
    record = DataRecord.counted(description, 2, 0, [(1, "not an image")])
    assert record.as_dict()["skipped"] == [{"index": 1, "reason": "not an image"}]
    assert record.num_skipped == 1 and "train" not in record.as_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"schema_version": SCHEMA_VERSION + 1}, "schema version 2; this version reads up to 1",
                     id="newer"),
        pytest.param({"run": None}, "is not a results.json of evaluate.py", id="no-run"),
        pytest.param({"backbone": {"name": "x"}}, "is not a results.json of evaluate.py", id="no-backbone"),
    ],
)  # fmt: skip
def test_newer_or_foreign_files_are_one_line(change: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        RunRecord.from_dict({**json.loads(EARLIER.read_text()), **change})
